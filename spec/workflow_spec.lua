-- koophone.workflow: steps that compose. Each step acts only on what
-- succeeded in the step before; the report says where each id dropped out.
-- Run: lua5.4 /usr/bin/busted spec/workflow_spec.lua
local emulator = require "spec.support.emulator"
local koophone = require "koophone"
local workflow = require "koophone.workflow"

local APP = { object_name = "com.example.app", file_name = "example.apk", object_version = "1.0",
              object_size = 12, install_package_url = "https://obs.example.com/example.apk" }

local function phones(n)
  local t = {}
  for i = 0, n - 1 do t[#t + 1] = ("ph%06d"):format(i) end
  return t
end

local function to_instance(phone) return (phone:gsub("^ph", "kp")) end

describe("koophone.workflow", function()
  local emu, client

  setup(function()
    emu = emulator.start { scenario = {
      durations = { default = 0.1, install = 0.2, restart = 0.2 },
      commands = { { match = "^pm list packages", output = "package:com.android.settings\npackage:com.example.app" } },
      overrides = {
        kp000005 = { command = "pm list packages", status = 2, execute_msg = "package:com.android.settings" },
        kp000007 = { match = "^install", status = -1, error_msg = "Install failed." },
      },
    } }
    client = assert(koophone.new { token = emu.token, endpoint = emu.url, cph_endpoint = emu.url,
                                   project_id = emu.project_id, poll_interval = 0.1 })
  end)
  teardown(function()
    client:close()
    emu:stop()
  end)

  it("restarts, installs on the phones that came back, then verifies; each id says where it stopped", function()
    local list = phones(150)
    list[#list + 1] = "ph999999" -- not in the fleet: its restart fails
    local steps = {}
    local report = assert(workflow.new(client, {
      phone_to_instance = to_instance, concurrency = 8,
      on_progress = function(p) steps[p.step] = true end,
    })
      :restart(list)
      :wait(0.1)
      :install(APP)
      :run("pm list packages", { expect = "package:com.example.app" })
      :execute())
    assert.equal(151, #report.rows)
    for i, id in ipairs(list) do assert.equal(id, report.rows[i].id) end
    assert.equal(148, report.summary.ok)
    local last = report:row("ph999999")
    assert.equal("restart", last.dropped_at)
    assert.equal("failed", last.status)
    local inst = report:row("ph000007")
    assert.equal("install", inst.dropped_at)
    assert.equal("kp000007", inst.step_id)
    local verify = report:row("ph000005")
    assert.equal("run", verify.dropped_at)
    assert.matches("package:com.example.app", verify.message, 1, true)
    local good = report:row("ph000001")
    assert.equal("ok", good.status)
    assert.is_nil(good.dropped_at)
    assert.equal("run", good.step)
    assert.same({ "restart", "wait", "install", "run" },
                { report.summary.steps[1].name, report.summary.steps[2].name, report.summary.steps[3].name,
                  report.summary.steps[4].name })
    assert.equal(150, report.summary.steps[3].total)
    assert.is_true(steps.restart and steps.install and steps.run)
  end)

  it("drops an id its mapping does not know, and starts from instances too", function()
    local report = assert(workflow.new(client, { phone_to_instance = { ph000001 = "kp000001" } })
      :restart({ "ph000001", "ph000002" })
      :run("echo hi", { mode = "sync" })
      :run("echo again", { mode = "sync" })
      :execute())
    assert.equal("ok", report.rows[1].status)
    assert.equal("run#2", report.rows[1].step)
    assert.equal("error", report.rows[2].status)
    assert.equal("run", report.rows[2].dropped_at)
    local r2 = assert(workflow.new(client):run("echo x", { ids = { "kp000010", "nosuch" }, mode = "sync" }):execute())
    assert.same({ "ok", "failed" }, { r2.rows[1].status, r2.rows[2].status })
  end)

  it("returns the first step's validation error, naming the step", function()
    local r, _, err = workflow.new(client):install({ object_name = "x" }, { ids = { "kp000001" } }):execute()
    assert.is_nil(r)
    assert.equal("install", err.step)
    r, _, err = workflow.new(client):run("echo"):execute()
    assert.is_nil(r)
    assert.equal("ids", err.field)
  end)

  it("ships examples/rollout.lua, runnable against the emulator", function()
    local q = emulator.shell_quote
    local cmd = ("cd %s && KOOPHONE_ENDPOINT=%s KOOPHONE_CPH_ENDPOINT=%s KOOPHONE_TOKEN=%s KOOPHONE_PROJECT_ID=%s "
      .. "KOOPHONE_BOOT_WAIT=0.1 KOOPHONE_EXPECT=package:com.example.app "
      .. "LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/lua5.4/?.so;;' lua5.4 examples/rollout.lua 20 2>/dev/null")
      :format(q(emulator.repo), q(emu.url), q(emu.url), q(emu.token), q(emu.project_id))
    local out, rc = emulator.run(cmd)
    assert.equal(1, rc) -- kp000005 and kp000007 fail on purpose
    assert.matches("20 ids: 18 ok, 2 failed", out)
    assert.matches("ph000005%s+failed%s+run%s+run", out)
    assert.matches("ph000007%s+failed%s+install%s+install", out)
  end)
end)
