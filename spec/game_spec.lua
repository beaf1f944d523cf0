-- The game-automation examples against the emulator: a 60 fps frame loop
-- (examples/game_loop.lua) and a host that only resumes a coroutine once per
-- frame (examples/coroutine_host.lua). Both must finish a 1,000-instance
-- rollout while every frame's koophone work stays bounded.
local emulator = require "spec.support.emulator"

describe("game automation examples", function()
  local emu
  setup(function()
    emu = emulator.start { scenario = { latency = { default = 0.02 }, durations = { default = 0.5 } } }
  end)
  teardown(function() if emu then emu:stop() end end)

  local function run(script, n)
    local env = ("KOOPHONE_TOKEN=%s KOOPHONE_ENDPOINT=%s KOOPHONE_CPH_ENDPOINT=%s KOOPHONE_PROJECT_ID=%s"):format(
      emu.token, emu.url, emu.url, emu.project_id)
    return emulator.run(env .. " " .. emulator.lua_command() .. " examples/" .. script .. " " .. n .. " 2>&1")
  end

  it("game_loop.lua: 1,000 instances at 60 fps, bounded update per frame", function()
    local out, rc = run("game_loop.lua", 1000)
    assert.equal(0, rc, out)
    local ok, frames, mean, worst = out:match(
      "game loop: 1000 instances, (%d+) ok, (%d+) frames, update mean ([%d%.]+) ms, worst ([%d%.]+) ms")
    assert.is_truthy(ok, out)
    assert.equal(1000, tonumber(ok))
    -- ~0.7 s of jobs at 60 fps: a few dozen frames, not one long blocking one
    assert.is_true(tonumber(frames) >= 20, out)
    assert.is_true(tonumber(mean) < 8, out)
    assert.is_true(tonumber(worst) < 50, out) -- generous: shared machines, sanitizers
    assert.matches("frame%s+%d+%s+1000/1000 done", out)
    print("\n" .. out:match("game loop:[^\n]*"))
  end)

  it("coroutine_host.lua: koophone calls inside a coroutine resumed once per frame", function()
    local out, rc = run("coroutine_host.lua", 1000)
    assert.equal(0, rc, out)
    assert.matches("sync: kp000001 ok 12", out)
    assert.matches("task: 2 rows, first kp000002 ok", out)
    assert.matches("batch: 1000 ids, 1000 ok", out)
    local frames, worst, ok = out:match(
      "coroutine host: (%d+) frames, worst script slice ([%d%.]+) ms %(budget [%d%.]+ ms%), (%d+) ok")
    assert.is_truthy(frames, out)
    assert.equal(1000, tonumber(ok))
    assert.is_true(tonumber(frames) >= 20, out) -- the script gave many frames back
    assert.is_true(tonumber(worst) < 50, out)
    print("\n" .. out:match("coroutine host:[^\n]*"))
  end)
end)
