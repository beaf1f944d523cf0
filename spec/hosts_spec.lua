-- koophone under other hosts' event loops: a 1,000-instance batch inside a
-- cqueues controller and inside a luv (libuv) loop, each beside a 10 ms
-- timer of the host's own that must keep ticking. Each host runs as a child
-- process per Lua version that has a koophone build (build/<lua>/) and the
-- host's Debian module (lua-cqueues, lua-luv).
local emulator = require "spec.support.emulator"
local shq = emulator.shell_quote

local LUAS = { "lua5.4", "lua5.3", "lua5.1" }

local function sh_ok(cmd) return select(2, emulator.run(cmd .. " >/dev/null 2>&1")) == 0 end

describe("hosts", function()
  local emu
  setup(function()
    emu = emulator.start { scenario = { latency = { default = 0.02 }, durations = { default = 0.5 } } }
  end)
  teardown(function() if emu then emu:stop() end end)

  local function run_host(lua, script, n)
    local repo = emulator.repo
    local env = ("LUA_PATH=%s LUA_CPATH=%s"):format(
      shq(repo .. "/lua/?.lua;" .. repo .. "/lua/?/init.lua;./?.lua;;"),
      shq(repo .. "/build/" .. lua .. "/?.so;;"))
    local cmd = ("%s %s %s %s %s %s %d 2>&1"):format(env, lua, shq(repo .. "/spec/hosts/" .. script),
      shq(emu.url), shq(emu.token), shq(emu.project_id), n)
    local out, rc = emulator.run(cmd)
    return out, rc
  end

  -- the promises of spec/promises_spec.lua, kept under each host too
  for _, host in ipairs { "cqueues", "luv" } do
    local usable = sh_ok("test -f " .. shq(emulator.repo .. "/build/lua5.4/koophone/core.so"))
      and sh_ok("lua5.4 -e " .. shq("require '" .. host .. "'"))
    local test = usable and it or pending
    test(host .. ": two waiters on one task, a wait abandoned on time, a closed client beside others", function()
      emu:reset()
      emu:add_fault { endpoint = "task", kind = "stall", seconds = 3, count = 1 }
      local repo = emulator.repo
      local cmd = ("LUA_PATH=%s LUA_CPATH=%s lua5.4 %s %s %s %s %s 2>&1"):format(
        shq(repo .. "/lua/?.lua;" .. repo .. "/lua/?/init.lua;./?.lua;;"), shq(repo .. "/build/lua5.4/?.so;;"),
        shq(repo .. "/spec/hosts/promises_host.lua"), host, shq(emu.url), shq(emu.token), shq(emu.project_id))
      local out, rc = emulator.run(cmd)
      assert.equal(0, rc, out)
      local r = emulator.decode(out:match("{.*}"))
      assert.is_table(r, out)
      assert.equal(2, r.first, out)
      assert.equal(2, r.second, out)
      assert.equal("closed", r.closed, out)
      assert.equal("timeout", r.abandoned.kind, out)
      assert.is_true(r.abandoned.took < 1.5, out)
    end)
  end

  for _, host in ipairs { { "cqueues", "cqueues_host.lua" }, { "luv", "luv_host.lua" } } do
    for _, lua in ipairs(LUAS) do
      local usable = sh_ok("test -f " .. shq(emulator.repo .. "/build/" .. lua .. "/koophone/core.so"))
        and sh_ok(lua .. " -e " .. shq("require '" .. host[1] .. "'"))
      local test = usable and it or pending
      test(host[1] .. " under " .. lua .. ": a 1,000-instance batch, the host's timer keeps ticking", function()
        local out, rc = run_host(lua, host[2], 1000)
        assert.equal(0, rc, out)
        local r = emulator.decode(out:match("{.*}"))
        assert.is_table(r, out)
        assert.equal(1000, r.total)
        assert.equal(1000, r.rows)
        assert.equal(1000, r.ok)
        -- the batch takes ~0.6 s; a blocked loop would tick once or twice
        assert.is_true(r.ticks >= r.elapsed * 100 * 0.5, out)
        assert.is_true(r.worst_tick < 0.1, out)
        print(("\n%s/%s: batch %.2f s, %d ticks, worst tick gap %.1f ms"):format(
          host[1], lua, r.elapsed, r.ticks, r.worst_tick * 1000))
      end)
    end
  end
end)
