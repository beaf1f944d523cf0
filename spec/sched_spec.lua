-- Waiting: blocking outside any scheduler, yielding inside koophone.spawn.
local koophone = require "koophone"
local sched = require "koophone.sched"
local emulator = require "spec.support.emulator"

describe("waiting", function()
  local emu, client
  setup(function()
    emu = emulator.start{ scenario = { durations = { default = 0.5 } } }
    client = assert(koophone.new{ token = emu.token, endpoint = emu.url, poll_interval = 0.1 })
  end)
  teardown(function() emu:stop() end)
  before_each(function() emu:reset() end)

  local function cpu() return os.clock() end

  it("blocks outside any scheduler without burning CPU", function()
    local task = assert(client:async_command("sleep 1", { "kp000020" }))
    local c0, t0 = cpu(), koophone.now()
    assert(task:wait{ timeout = 10 })
    local wall, used = koophone.now() - t0, cpu() - c0
    assert.is_true(wall >= 0.9)
    assert.is_true(used < wall * 0.2, ("cpu %.3fs over %.3fs"):format(used, wall))
  end)

  it("sched.frames: inside a host's plain coroutine, a wait yields to the host instead of blocking", function()
    local script = coroutine.create(function()
      local task = assert(sched.frames(client.async_command, client, "echo f", { "kp000030", "kp000031" }))
      return assert(sched.frames(task.wait, task, { timeout = 10 }))
    end)
    local frames, rows = 0, nil
    while coroutine.status(script) ~= "dead" do
      local ok, v = coroutine.resume(script)
      assert(ok, v)
      if coroutine.status(script) == "dead" then rows = v else assert.equal("koophone", v) end
      frames = frames + 1
      client.engine:wait(5) -- the host's frame
    end
    assert.equal(2, #rows)
    assert.equal("ok", rows[1].status)
    assert.is_true(frames > 10, "the wait took " .. frames .. " frames")
  end)

  it("runs many tasks at once in one thread with koophone.spawn/run", function()
    local results = {}
    local t0 = koophone.now()
    for i = 1, 20 do
      koophone.spawn(function()
        local id = ("kp%06d"):format(100 + i)
        local task = assert(client:async_command("sleep 1", { id }))
        local rows = assert(task:wait{ timeout = 10 })
        results[#results + 1] = rows[1].status
      end)
    end
    assert.is_true(koophone.run())
    assert.equal(20, #results)
    for _, s in ipairs(results) do assert.equal("ok", s) end
    -- twenty 1-second jobs waited for together, not one after another
    assert.is_true(koophone.now() - t0 < 5)
  end)

  it("mixes sync calls, sleeps and tasks in spawned coroutines", function()
    local order = {}
    koophone.spawn(function()
      sched.sleep(client.engine, 0.3)
      order[#order + 1] = "slept"
    end)
    koophone.spawn(function()
      local rows = assert(client:sync_command("echo fast", { "kp000030" }))
      order[#order + 1] = rows[1].output
    end)
    koophone.run()
    assert.same({ "fast", "slept" }, order)
  end)

  it("raises the error of a coroutine that failed", function()
    koophone.spawn(function() error("boom") end)
    assert.has_error(function() koophone.run() end)
  end)

  it("lets a game loop step the engine and poll tasks each frame", function()
    local task = assert(client:async_command("echo frame", { "kp000031" }))
    local frames, done = 0, false
    while not done and frames < 10000 do
      client:step()
      done = task:poll()
      frames = frames + 1
      sched.sleep(client.engine, 0.01) -- the rest of the frame
    end
    assert.is_true(done)
    assert.is_true(frames > 5)
  end)
end)
