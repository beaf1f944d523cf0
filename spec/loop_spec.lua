-- koophone.loop: one caller of perform, and exactly the right waiters woken.
local koophone = require "koophone"
local loop = require "koophone.loop"
local sched = require "koophone.sched"
local emulator = require "spec.support.emulator"

describe("koophone.loop", function()
  local emu, client
  setup(function()
    emu = emulator.start { scenario = { latency = { default = 0.05 } } }
    client = assert(koophone.new { token = emu.token, endpoint = emu.url })
  end)
  teardown(function() client:close(); emu:stop() end)

  local function get(path)
    return client.engine:submit { url = emu.url .. path, method = "GET", timeout = 10000 }
  end

  it("wakes every coroutine waiting on one request, once each", function()
    local l = loop.new()
    local req = get("/v1/instances/tasks/nope")
    local woken = {}
    for k = 1, 3 do
      l:spawn(function()
        sched.await(client.engine, req)
        woken[#woken + 1] = k
      end)
    end
    assert.is_true(l:run(10))
    table.sort(woken)
    assert.same({ 1, 2, 3 }, woken)
    assert.is_true(req:done())
  end)

  it("a waiter that gave up at its deadline is not woken again by its request", function()
    local l = loop.new()
    local req = get("/v1/instances/tasks/slow")
    local resumed = 0
    l:spawn(function()
      sched.await(client.engine, req, koophone.now() + 0.001)
      resumed = resumed + 1
    end)
    assert.is_true(l:run(10))
    assert.equal(1, resumed)
    -- the request ends later; its stale token must not resume a dead coroutine
    loop.block(client.engine, req)
    assert.equal(0, l:step())
  end)

  it("a semaphore hands a permit past a waiter that gave up, in arrival order", function()
    local l = loop.new()
    local sem = loop.semaphore(1)
    local order = {}
    l:spawn(function()
      sem:acquire()
      sched.sleep(client.engine, 0.1)
      order[#order + 1] = "first"
      sem:release()
    end)
    l:spawn(function() -- parks, then leaves at its deadline (the way a batch timeout would)
      loop.yield_park(function(t) sem.tail = sem.tail + 1 sem.queue[sem.tail] = t end, koophone.now() + 0.02)
      order[#order + 1] = "gave up"
    end)
    for k = 1, 3 do
      l:spawn(function()
        sem:acquire()
        order[#order + 1] = k
        sem:release()
      end)
    end
    assert.is_true(l:run(10))
    assert.same({ "gave up", "first", 1, 2, 3 }, order)
    assert.equal(1, sem.permits)
  end)

  it("a loop nobody steps again holds up nobody else", function()
    local abandoned = loop.new()
    abandoned:spawn(function() sched.await(client.engine, get("/v1/instances/tasks/a")) end)
    abandoned:step() -- started, then dropped
    local rows = assert(client:sync_command("echo still", { "kp000001" }))
    assert.equal("ok", rows[1].status)
    local l = loop.new()
    local got
    l:spawn(function() got = assert(client:sync_command("echo too", { "kp000002" })) end)
    assert.is_true(l:run(10))
    assert.equal("ok", got[1].status)
  end)

  it("refuses to run from inside itself, and semaphores refuse to block outside a loop", function()
    local l = loop.new()
    local err
    l:spawn(function() err = select(2, pcall(l.run, l)) end)
    l:run()
    assert.matches("inside the running loop", err)
    local sem = loop.semaphore(0)
    assert.has_error(function() sem:acquire() end)
  end)

  it("sleeps of 10 slack or more end together on the slack grid; shorter ones stay exact", function()
    local saved = loop.slack
    loop.slack = 0.02
    local ok, err = pcall(function()
      local l = loop.new()
      local woke = {}
      -- five polls 3 ms apart: one or two grid points, not five wake-ups
      for i = 0, 4 do
        l:spawn(function()
          sched.sleep(client.engine, 0.2 + i * 0.003)
          woke[#woke + 1] = koophone.now()
        end)
      end
      local short
      l:spawn(function()
        local t0 = koophone.now()
        sched.sleep(client.engine, 0.01)
        short = koophone.now() - t0
      end)
      assert.is_true(l:run(10))
      table.sort(woke)
      local groups = 1
      for i = 2, #woke do
        if woke[i] - woke[i - 1] > 0.002 then groups = groups + 1 end
      end
      assert.is_true(groups <= 2, groups .. " wake-ups for five sleeps within one grid step")
      for _, t in ipairs(woke) do -- on the grid (to the loop's wake-up precision)
        local off = t % 0.02
        assert.is_true(off < 0.008, ("woke %.4f s past a grid point"):format(off))
      end
      assert.is_true(short >= 0.01 and short < 0.018, ("a 0.01 s sleep took %.4f s"):format(short))
    end)
    loop.slack = saved
    assert(ok, err)
  end)
end)
