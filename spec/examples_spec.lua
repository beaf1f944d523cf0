-- Every example runs against the emulator, as a user would run it.
local emulator = require "spec.support.emulator"

describe("examples", function()
  local emu
  setup(function() emu = emulator.start{ scenario = { durations = { default = 0.3 } } } end)
  teardown(function() emu:stop() end)

  local function run(script)
    local lua = emulator.lua_command()
    local env = ("KOOPHONE_TOKEN=%s KOOPHONE_ENDPOINT=%s KOOPHONE_CPH_ENDPOINT=%s KOOPHONE_PROJECT_ID=%s"):format(
      emu.token, emu.url, emu.url, emu.project_id)
    return emulator.run(env .. " " .. lua .. " examples/" .. script .. " 2>&1")
  end

  for _, case in ipairs {
    { "sync_command.lua", "kp000001%s+ok%s+12" },
    { "async_command.lua", "ok 100, failed 0" },
    { "install_app.lua", "kp000001%s+ok" },
    { "restart_phones.lua", "ph000001%s+ok" },
    { "task.lua", "kp000003%s+ok%s+hello" },
    { "jobs.lua", "ShowJob%s+ph000010%s+ok" },
    { "coroutines.lua", "1000 instances in" },
    { "fleet.lua", "instances: 10004, 10004 running.*app%s+com.android.settings.*kp000002%s+starting.*"
                   .. "kp000002%s+running.*phone%s+ph000001%s+running%s+2" },
  } do
    it(case[1], function()
      local out, rc = run(case[1])
      assert.equal(0, rc, out)
      assert.matches(case[2], out)
      assert.not_matches("Signature=SIG", out)
      assert.not_matches(emu.token, out)
    end)
  end
end)
