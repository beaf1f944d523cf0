-- The emulator's SDK-era behaviour (docs/vendor.md): the "sdk" vendor switch
-- (flat install reply, FULFILL task ids, install jobs 0 -> 1 -> 2/3), error
-- body variants, X-Request-Id on every reply, the gateway's per-user rate limit.
-- Run: lua5.4 /usr/bin/busted spec/emulator_sdk_spec.lua
local emulator = require "spec.support.emulator"

local function sleep(s) os.execute("sleep " .. s) end

local function now()
  local h = io.popen("date +%s.%N")
  local t = tonumber(h:read("*l"))
  h:close()
  return t
end

local function finish(emu)
  local log = emu:error_log()
  emu:stop()
  assert.falsy(log:find("%[error%]") or log:find("%[alert%]") or log:find("%[crit%]"), log)
end

local INSTALL = {
  fast_install = "1", object_name = "com.example.game", file_name = "game.apk", object_version = "3.0",
  object_size = "12", biz_type = "apk", content_type = "application/octet-stream", content_md5 = "x",
  install_package_url = "https://obs.example.com/game.apk",
}
local function install_body(list)
  local b = {}
  for k, v in pairs(INSTALL) do b[k] = v end
  b.instance_id_list = list
  return b
end

local SYNC = { command = "echo hi", instance_ids = { "kp000001" } }

describe('the "sdk" vendor switch', function()
  local emu
  setup(function()
    emu = emulator.start{ scenario = { vendor = "sdk", durations = { install = 1.5 },
      overrides = { kp000002 = { match = "^install ", status = -1, error_code = "KOOPHONE.API.62005",
                                 error_msg = "The app package already exists." } } } }
  end)
  teardown(function() finish(emu) end)

  local function jobs(task_id)
    local s, b = emu:call("GET", "/v1/instances/tasks/" .. task_id)
    assert.equal(200, s)
    local st = {}
    for i, j in ipairs(b.data.jobs) do st[i] = j.status end
    return st, b.data.jobs
  end

  it("answers install flat, with a FULFILL task id, and jobs go 0 -> 1 -> 2 or 3", function()
    local t0 = now()
    local s, b = emu:call("POST", "/v1/instances/app/install", install_body { "kp000001", "kp000002", "nosuch" })
    assert.equal(200, s)
    assert.equal("0", b.error_code)
    assert.is_nil(b.data.data)
    assert.matches("^FULFILL[%w_%-]+$", b.data.task_id)
    assert.equal(3, #b.data.cmd_jobs)
    assert.equal("kp000002", b.data.cmd_jobs[2].instance_id)
    local st = jobs(b.data.task_id)
    assert.is_true(now() - t0 < 0.45, "too slow to see the first phase")
    assert.same({ 0, 0, 3 }, st)                 -- not run yet; an unknown id fails at once
    sleep(0.8 - (now() - t0))
    st = jobs(b.data.task_id)
    assert.same({ 1, 1, 3 }, st)
    sleep(1.7 - (now() - t0))
    local all
    st, all = jobs(b.data.task_id)
    assert.same({ 2, 3, 3 }, st)
    assert.equal("KOOPHONE.API.62005", all[2].error_code)
    assert.equal("CPS0005", all[3].error_code)
  end)

  it("leaves async-command jobs at 1 -> 2/-1 (the SDK's statuses for commands)", function()
    emu:config{ durations = { ["async-command"] = 0.3 } }
    local s, b = emu:call("POST", "/v1/instances/async-command", { command = "echo x", instance_ids = { "kp000001" } })
    assert.equal(200, s)
    assert.matches("^%x+$", b.data.task_id)
    assert.same({ 1 }, (jobs(b.data.task_id)))
    sleep(0.4)
    assert.same({ 2 }, (jobs(b.data.task_id)))
  end)

  it("can be switched back at run time", function()
    emu:config{ vendor = "seed" }
    local _, b = emu:call("POST", "/v1/instances/app/install", install_body { "kp000001" })
    assert.matches("^ZGCA", b.data.data.task_id)
    assert.same({ 1 }, (jobs(b.data.data.task_id)))
    local cfg, status = emu:control("POST", "/_emulator/config", { vendor = "other" })
    assert.equal(400, status)
    assert.truthy(cfg.error:find("vendor", 1, true))
  end)
end)

describe("error body variants and X-Request-Id", function()
  local emu
  setup(function() emu = emulator.start{} end)
  teardown(function() finish(emu) end)
  after_each(function() emu:reset() end)

  it("always sends X-Request-Id: the caller's, else a generated one", function()
    local _, _, h = emu:call("POST", "/v1/instances/sync-command", SYNC, { ["x-request-id"] = "mine-1" })
    assert.equal("mine-1", h["x-request-id"])
    local s
    s, _, h = emu:call("POST", "/v1/instances/app/install", install_body { "kp000001" }, { ["x-request-id"] = false })
    assert.equal(200, s)
    assert.matches("^%x+$", h["x-request-id"])
    s, _, h = emu:call("GET", "/v1/nothing/here", nil, { ["x-request-id"] = false })
    assert.equal(404, s)
    assert.truthy(h["x-request-id"])
    s, _, h = emu:call("POST", "/v1/instances/reboot", { instance_ids = { "kp000001" } }, { ["X-Auth-Token"] = "bad" })
    assert.equal(401, s)
    assert.truthy(h["x-request-id"])
  end)

  it("shapes error bodies as error_style says, on both APIs and in faults; success bodies unchanged", function()
    local bad = { ["X-Auth-Token"] = "bad" }
    local cph = "/v1/" .. emu.project_id .. "/cloud-phone/phones/ph000001"
    local expect = {
      errorCode = function(b) return b.errorCode, b.errorMsg end,
      code = function(b) return b.code, b.message end,
      nested = function(b) return b.error.code, b.error.message end,
      error_code = function(b) return b.error_code, b.error_msg end,
    }
    for style, get in pairs(expect) do
      emu:config{ error_style = style }
      local s, b = emu:call("POST", "/v1/instances/sync-command", SYNC, bad)
      assert.equal(401, s)
      local code, msg = get(b)
      assert.equal("KOOPHONE.API.0401", code, style)
      assert.equal("Unauthorized: invalid or expired token.", msg, style)
      s, b = emu:call("GET", cph, nil, bad)
      assert.equal(401, s)
      assert.equal("CPS.0001", (get(b)), style)
      emu:add_fault{ endpoint = "task", kind = "500", count = 1 }
      s, b = emu:call("GET", "/v1/instances/tasks/abc")
      assert.equal(500, s)
      assert.equal("KOOPHONE.API.9999", (get(b)), style)
      s, b = emu:call("GET", "/v1/instances/tasks/nosuch")   -- a pre-encoded error body
      assert.equal(400, s)
      assert.equal("Task not found.", select(2, get(b)), style)
      s, b = emu:call("POST", "/v1/instances/sync-command", SYNC)
      assert.equal(200, s)
      assert.equal("0", b.error_code)
    end
  end)

  it("answers the 429 fault with the gateway's APIGW.0308", function()
    emu:add_fault{ endpoint = "sync-command", kind = "429", count = 1 }
    local s, b = emu:call("POST", "/v1/instances/sync-command", SYNC)
    assert.equal(429, s)
    assert.equal("APIGW.0308", b.error_code)
  end)
end)

describe("the gateway's per-user rate limit", function()
  local emu
  setup(function() emu = emulator.start{ scenario = { rate_limit = { limit = 5, window = 60 } } } end)
  teardown(function() finish(emu) end)
  before_each(function() emu:reset() end)

  -- start right after a window boundary, so a burst stays in one window
  local function align(window, room)
    local t = now()
    local into = t % window
    if window - into < room then sleep(window - into + 0.05) end
  end

  it("answers 429 APIGW.0308 with Retry-After over the limit, executes nothing, counts it", function()
    align(60, 10)
    for i = 1, 5 do assert.equal(200, (emu:call("POST", "/v1/instances/sync-command", SYNC)), i) end
    local s, b, h = emu:call("POST", "/v1/instances/sync-command", SYNC)
    assert.equal(429, s)
    assert.same({ error_code = "APIGW.0308",
      error_msg = "The throttling threshold has been reached: policy user over ratelimit,limit:5,time:1 minute" }, b)
    local ra = tonumber(h["retry-after"])
    assert.truthy(ra and ra >= 1 and ra <= 60)
    assert.truthy(h["x-request-id"])
    s = emu:call("POST", "/v1/instances/reboot", { instance_ids = { "kp000002" } })
    assert.equal(429, s)
    assert.equal(5, emu:executions().total)
    assert.is_nil(emu:executions("kp000002").executions.kp000002)
    local st = emu:stats()
    assert.equal(2, st.throttled)
    assert.equal(1, st.throttled_by_endpoint["sync-command"])
    assert.equal(1, st.throttled_by_endpoint.reboot)
    assert.equal(2, #emu:requests{ endpoint = "sync-command", limit = 2 }.requests)
  end)

  it("counts per user: another token has its own budget; IAM is not throttled", function()
    align(60, 10)
    for _ = 1, 6 do emu:call("GET", "/v1/instances/tasks/x") end
    assert.equal(429, (emu:call("GET", "/v1/instances/tasks/x")))
    local body = { auth = { identity = { methods = { "password" }, password = { user = {
      name = "emulator-user", password = "emulator-password", domain = { name = "emulator-domain" } } } } } }
    local s, h
    for _ = 1, 7 do
      local tok
      s, tok, h = emu:call("POST", "/v3/auth/tokens", body, { ["X-Auth-Token"] = false })
      assert.is_not_nil(tok.token)
      assert.equal(201, s)
    end
    local other = h["x-subject-token"]
    s = emu:call("POST", "/v1/instances/sync-command", SYNC, { ["X-Auth-Token"] = other })
    assert.equal(200, s)
  end)

  it("opens again in the next window (scaled down: 2 per second)", function()
    emu:config{ rate_limit = { limit = 2, window = 1 } }
    align(1, 0.5)
    assert.equal(200, (emu:call("POST", "/v1/instances/sync-command", SYNC)))
    assert.equal(200, (emu:call("POST", "/v1/instances/sync-command", SYNC)))
    local s, b, h = emu:call("POST", "/v1/instances/sync-command", SYNC)
    assert.equal(429, s)
    assert.truthy(b.error_msg:find("limit:2,time:1 second", 1, true))
    assert.equal("1", h["retry-after"])
    sleep(1)
    assert.equal(200, (emu:call("POST", "/v1/instances/sync-command", SYNC)))
  end)

  it("names the window the way the gateway does, and can be switched off", function()
    emu:config{ rate_limit = { limit = 1, window = 300 } }
    emu:call("POST", "/v1/instances/sync-command", SYNC)
    local _, b = emu:call("POST", "/v1/instances/sync-command", SYNC)
    assert.truthy(b.error_msg:find("limit:1,time:5 minute", 1, true), b.error_msg)
    emu:config{ rate_limit = emulator.null }
    assert.equal(200, (emu:call("POST", "/v1/instances/sync-command", SYNC)))
    local _, status = emu:control("POST", "/_emulator/config", { rate_limit = { limit = 0, window = 1 } })
    assert.equal(400, status)
  end)
end)
