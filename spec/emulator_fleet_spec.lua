-- The emulator's fleet operations from the vendor's SDKs (docs/vendor.md):
-- KooPhone reboot, batch-reset, backup, batch-query-status, batch-query,
-- app-list; CPH phone detail, phone list, batch-reset; the per-instance state
-- they change; paging; bad input; the silent-install fault.
-- Run: lua5.4 /usr/bin/busted spec/emulator_fleet_spec.lua
local emulator = require "spec.support.emulator"

local function sleep(s) os.execute("sleep " .. s) end

local function finish(emu)
  local log = emu:error_log()
  emu:stop()
  assert.falsy(log:find("%[error%]") or log:find("%[alert%]") or log:find("%[crit%]"), log)
end

local function ids(n, from)
  local t = {}
  for i = from or 0, (from or 0) + n - 1 do t[#t + 1] = string.format("kp%06d", i) end
  return t
end

local function status_of(emu, list)
  local s, b = emu:call("POST", "/v1/instances/batch-query-status", { instance_ids = list })
  assert.equal(200, s)
  local out = {}
  for _, r in ipairs(b.data.status_results) do out[r.instance_id] = r.status end
  return out, b
end

local function app_list(emu, id, q)
  local s, b = emu:call("GET", "/v1/instances/" .. id .. "/app-list?" .. (q or "page_no=1&page_size=200"))
  assert.equal(200, s)
  return b.data, b
end

local function installed(emu, id)
  local data = app_list(emu, id, "page_no=1&page_size=200&app_type=2")
  local out = {}
  for _, a in ipairs(data.result) do out[a.app_pkg] = a.app_version end
  return out
end

local INSTALL = {
  fast_install = "0", object_name = "com.example.game", file_name = "game.apk", object_version = "2.1.0",
  object_size = "12", biz_type = "apk", content_type = "application/octet-stream", content_md5 = "x",
  install_package_url = "https://obs.example.com/game.apk",
}
local function install(emu, list, version)
  local body = {}
  for k, v in pairs(INSTALL) do body[k] = v end
  body.instance_id_list = list
  body.object_version = version or body.object_version
  local s, b = emu:call("POST", "/v1/instances/app/install", body)
  assert.equal(200, s)
  return b
end

local function wait_task(emu, task_id)
  for _ = 1, 100 do
    local s, b = emu:call("GET", "/v1/instances/tasks/" .. task_id)
    assert.equal(200, s)
    local busy = false
    for _, j in ipairs(b.data.jobs) do if j.status == 0 or j.status == 1 then busy = true end end
    if not busy then return b.data.jobs end
    sleep(0.1)
  end
  error("task " .. task_id .. " did not finish")
end

describe("KooPhone fleet operations", function()
  local emu
  setup(function()
    emu = emulator.start{ scenario = { durations = { reboot = 0.6, reset = 0.6, backup = 0.3, install = 0.2 } } }
  end)
  teardown(function() finish(emu) end)
  before_each(function() emu:reset() end)

  it("batch-query-status names every instance: 2 running, 0 unknown", function()
    local st, b = status_of(emu, { "kp000001", "a44uhlf7", "nosuch" })
    assert.equal("0", b.error_code)
    assert.same({ kp000001 = 2, a44uhlf7 = 2, nosuch = 0 }, st)
    assert.equal("kp000001", b.data.status_results[1].instance_id)
  end)

  it("reboot answers without data, then the instance is starting (4) until its duration ends", function()
    local s, b = emu:call("POST", "/v1/instances/reboot", { instance_ids = { "kp000003", "kp000004" } })
    assert.equal(200, s)
    assert.same({ error_code = "0", error_msg = "ok" }, b)
    assert.same({ kp000003 = 4, kp000004 = 4, kp000005 = 2 }, (status_of(emu, { "kp000003", "kp000004", "kp000005" })))
    assert.equal(1, emu:executions("kp000003").executions.kp000003.reboot)
    sleep(0.7)
    assert.same({ kp000003 = 2, kp000004 = 2 }, (status_of(emu, { "kp000003", "kp000004" })))
  end)

  it("reboot of an unknown instance is refused whole (KOOPHONE.API.1001) and runs nothing", function()
    local s, b = emu:call("POST", "/v1/instances/reboot", { instance_ids = { "kp000003", "nosuch" } })
    assert.equal(400, s)
    assert.equal("KOOPHONE.API.1001", b.error_code)
    assert.truthy(b.error_msg:find("nosuch", 1, true))
    assert.equal(0, emu:executions().total)
    assert.equal(2, (status_of(emu, { "kp000003" })).kp000003)
  end)

  it("install lists the app when its job succeeds; batch-reset clears it and restarts the instance", function()
    local b = install(emu, { "kp000010", "kp000011" })
    assert.same({}, installed(emu, "kp000010"))     -- not before the job ends
    wait_task(emu, b.data.data.task_id)
    assert.same({ ["com.example.game"] = "2.1.0" }, installed(emu, "kp000010"))
    local data = app_list(emu, "kp000010")
    local found
    for _, a in ipairs(data.result) do
      if a.app_pkg == "com.example.game" then found = a end
    end
    assert.same({ app_name = "game", app_version = "2.1.0", app_pkg = "com.example.game", icon_url = "" }, found)
    -- an upgrade replaces the version
    wait_task(emu, install(emu, { "kp000010" }, "2.2.0").data.data.task_id)
    assert.same({ ["com.example.game"] = "2.2.0" }, installed(emu, "kp000010"))

    local s, r = emu:call("POST", "/v1/instances/batch-reset", { instance_ids = { "kp000010", "nosuch" } })
    assert.equal(200, s)
    assert.equal("0", r.error_code)
    assert.matches("^%x+$", r.data.task_id)
    assert.equal(2, #r.data.cmd_jobs)
    assert.equal("kp000010", r.data.cmd_jobs[1].instance_id)
    assert.same({}, installed(emu, "kp000010"))
    assert.same({ ["com.example.game"] = "2.1.0" }, installed(emu, "kp000011"))
    assert.equal(4, (status_of(emu, { "kp000010" })).kp000010)
    local jobs = wait_task(emu, r.data.task_id)
    assert.equal(2, jobs[1].status)
    assert.equal(-1, jobs[2].status)
    assert.equal("CPS0005", jobs[2].error_code)
    assert.equal(2, (status_of(emu, { "kp000010" })).kp000010)
    assert.equal(1, emu:executions("kp000010").executions.kp000010.reset)
  end)

  it("a failed install job adds nothing", function()
    emu:config{ overrides = { kp000012 = { match = "^install ", status = -1 } } }
    local jobs = wait_task(emu, install(emu, { "kp000012" }).data.data.task_id)
    assert.equal(-1, jobs[1].status)
    assert.same({}, installed(emu, "kp000012"))
  end)

  it("backup gives a task and shows in the instance list", function()
    local s, b = emu:call("POST", "/v1/instances/backup", { instance_ids = { "kp000020" } })
    assert.equal(200, s)
    assert.equal(1, #b.data.cmd_jobs)
    local _, l = emu:call("GET", "/v1/instances/batch-query?x-request-id=q1&page_no=1&page_size=1&instance_id=kp000020")
    assert.equal(1, l.data.result[1].backup_status)
    wait_task(emu, b.data.task_id)
    _, l = emu:call("GET", "/v1/instances/batch-query?x-request-id=q1&page_no=1&page_size=1&instance_id=kp000020")
    assert.equal(2, l.data.result[1].backup_status)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT", l.data.result[1].backup_time)
  end)

  it("validates instance_ids on every batch operation (KOOPHONE.API.1000, field and limit named)", function()
    for _, path in ipairs { "reboot", "batch-reset", "backup", "batch-query-status" } do
      local cases = {
        { "{", "body" }, { { instance_ids = {} }, "instance_ids" }, { { instance_ids = "kp000001" }, "instance_ids" },
        { { instance_ids = ids(101) }, "100" }, { { instance_ids = { string.rep("a", 33) } }, "32" },
        { { instance_ids = { 7 } }, "instance_ids" },
      }
      for _, c in ipairs(cases) do
        local s, b = emu:call("POST", "/v1/instances/" .. path, c[1])
        assert.equal(400, s, path)
        assert.equal("KOOPHONE.API.1000", b.error_code, path)
        if c[2] ~= "body" then assert.truthy(b.error_msg:find(c[2], 1, true), path .. ": " .. b.error_msg) end
      end
      assert.equal(405, (emu:call("GET", "/v1/instances/" .. path)), path)
    end
    assert.equal(0, emu:executions().total)
    assert.equal(200, (emu:call("POST", "/v1/instances/batch-query-status", { instance_ids = ids(100) })))
  end)

  it("app-list pages and filters by app_type; validates its parameters", function()
    wait_task(emu, install(emu, { "kp000030" }).data.data.task_id)
    local all = app_list(emu, "kp000030")
    assert.equal(9, all.total_count)
    local seen = {}
    for p = 1, 3 do
      local d = app_list(emu, "kp000030", "page_no=" .. p .. "&page_size=4")
      assert.equal(p, d.page_no)
      assert.equal(4, d.page_size)
      assert.equal(9, d.total_count)
      for _, a in ipairs(d.result) do seen[#seen + 1] = a.app_pkg end
    end
    assert.equal(9, #seen)
    local beyond = app_list(emu, "kp000030", "page_no=9&page_size=4")
    assert.same({}, beyond.result)
    assert.equal(8, app_list(emu, "kp000030", "page_no=1&page_size=50&app_type=1").total_count)
    local bad = {
      { "page_size=10", "page_no" }, { "page_no=1", "page_size" }, { "page_no=0&page_size=10", "page_no" },
      { "page_no=1&page_size=201", "200" }, { "page_no=x&page_size=1", "page_no" },
      { "page_no=1&page_size=1&app_type=3", "app_type" }, { "page_no=99999999999&page_size=1", "page_no" },
    }
    for _, c in ipairs(bad) do
      local s, b = emu:call("GET", "/v1/instances/kp000030/app-list?" .. c[1])
      assert.equal(400, s, c[1])
      assert.equal("KOOPHONE.API.1000", b.error_code, c[1])
      assert.truthy(b.error_msg:find(c[2], 1, true), c[1] .. ": " .. b.error_msg)
    end
    local s, b = emu:call("GET", "/v1/instances/nosuch/app-list?page_no=1&page_size=1")
    assert.equal(400, s)
    assert.equal("KOOPHONE.API.1001", b.error_code)
    s, b = emu:call("GET", "/v1/instances/kp000030/app-list?page_no=1&page_size=1", nil, { ["x-request-id"] = false })
    assert.equal(400, s)
    assert.truthy(b.error_msg:find("x-request-id", 1, true))
  end)

  it("needs the token like every endpoint", function()
    local s, b = emu:call("POST", "/v1/instances/reboot", { instance_ids = { "kp000001" } }, { ["X-Auth-Token"] = "bad" })
    assert.equal(401, s)
    assert.equal("KOOPHONE.API.0401", b.error_code)
    assert.equal(0, emu:executions().total)
  end)

  it("faults and accounting cover the new endpoints", function()
    emu:add_fault{ endpoint = "reboot", kind = "503", count = 1 }
    local s = emu:call("POST", "/v1/instances/reboot", { instance_ids = { "kp000001" } })
    assert.equal(503, s)
    assert.equal(0, emu:executions().total)
    emu:add_fault{ endpoint = "instances", kind = "wrong_types", count = 1 }
    local _, b = emu:call("GET", "/v1/instances/batch-query?x-request-id=q&page_no=1&page_size=2")
    assert.equal("table", type(b.data.result))
    assert.is_nil(b.data.result[1])          -- a list turned into an object
    local st = emu:stats()
    assert.equal(1, st.by_endpoint.reboot)
    assert.equal(1, st.by_endpoint.instances)
    assert.equal(1, emu:requests{ endpoint = "reboot" }.count)
  end)
end)

describe("KooPhone batch-query (the instance list)", function()
  local emu
  setup(function() emu = emulator.start{ scenario = { fleet = { instances = 100000, phones = 1000 } } } end)
  teardown(function() finish(emu) end)

  local function list(q)
    local s, b, h = emu:call("GET", "/v1/instances/batch-query?" .. q)
    return s, b, h
  end

  it("lists 100,000 instances (+ the pages' example ids) page by page, each id once", function()
    local seen, n, pages = {}, 0, 0
    local total
    local page = 1
    local t0 = os.time()
    repeat
      local s, b, h = list("x-request-id=list-" .. page .. "&page_no=" .. page .. "&page_size=200")
      assert.equal(200, s)
      assert.equal("list-" .. page, h["x-request-id"])
      total = b.data.total_count
      for _, r in ipairs(b.data.result) do
        assert.is_nil(seen[r.instance_id])
        seen[r.instance_id] = true
        n = n + 1
      end
      pages = pages + 1
      page = page + 1
    until #b.data.result < 200
    assert.equal(100004, total)
    assert.equal(total, n)
    assert.equal(501, pages)
    assert.truthy(seen.kp099999 and seen.kp000000 and seen.a44uhlf7)
    assert.is_true(os.time() - t0 < 60)
  end)

  it("gives the SDK's fields, x-request-id echoed, and running_status from the state", function()
    local s, b = list("x-request-id=q&page_no=1&page_size=2")
    assert.equal(200, s)
    assert.equal("0", b.error_code)
    assert.equal(1, b.data.page_no)
    assert.equal(2, b.data.page_size)
    local r = b.data.result[1]
    for _, k in ipairs { "instance_id", "instance_name", "region", "instance_sku", "frozen_status", "running_status",
                         "login_status", "assign_status", "assign_user", "billing_mode", "project_id",
                         "project_name", "phone_id" } do
      assert.is_not_nil(r[k], k)
    end
    assert.equal("kp000000", r.instance_id)
    assert.equal("ph000000", r.phone_id)
    assert.equal(2, r.running_status)
    emu:call("POST", "/v1/instances/reboot", { instance_ids = { "kp000001" } })
    s, b = list("x-request-id=q&page_no=1&page_size=2")
    assert.equal(200, s)
    assert.equal(4, b.data.result[2].running_status)
  end)

  it("filters by instance_id, instance_name, time window and pool; orders desc", function()
    local _, b = list("x-request-id=q&page_no=1&page_size=10&instance_id=kp054321")
    assert.equal(1, b.data.total_count)
    assert.equal("kp054321", b.data.result[1].instance_id)
    _, b = list("x-request-id=q&page_no=1&page_size=10&instance_id=nosuch")
    assert.equal(0, b.data.total_count)
    assert.same({}, b.data.result)
    _, b = list("x-request-id=q&page_no=1&page_size=200&instance_name=kp09999")
    assert.equal(10, b.data.total_count)
    -- instances were created one second apart from 2025-01-01 00:00:00 UTC
    _, b = list("x-request-id=q&page_no=1&page_size=10&query_start_time=2025-01-01%2000:00:10"
      .. "&query_end_time=2025-01-01%2000:00:14")
    assert.equal(5, b.data.total_count)
    assert.equal("kp000010", b.data.result[1].instance_id)
    -- the listed order: numbered ids, then the pages' example ids (sorted)
    _, b = list("x-request-id=q&page_no=1&page_size=4&order=desc")
    assert.equal(100004, b.data.total_count)
    assert.equal("efjy72gs", b.data.result[1].instance_id)
    _, b = list("x-request-id=q&page_no=2&page_size=4&order=desc")
    assert.equal("kp099999", b.data.result[1].instance_id)
    assert.equal("kp099996", b.data.result[4].instance_id)
    _, b = list("x-request-id=q&page_no=1&page_size=3&pool_scene_tag=CLOUD_APP")
    assert.equal(0, b.data.total_count)
    _, b = list("x-request-id=q&page_no=1&page_size=3&pool_scene_tag=CLOUD_PHONE")
    assert.equal(100004, b.data.total_count)
  end)

  it("rejects bad parameters with KOOPHONE.API.1000 naming them", function()
    local cases = {
      { "page_no=1&page_size=10", "x-request-id" },
      { "x-request-id=q&page_size=10", "page_no" },
      { "x-request-id=q&page_no=1", "page_size" },
      { "x-request-id=q&page_no=0&page_size=10", "page_no" },
      { "x-request-id=q&page_no=1&page_size=201", "200" },
      { "x-request-id=q&page_no=1&page_size=1&order=up", "order" },
      { "x-request-id=q&page_no=1&page_size=1&pool_scene_tag=X", "pool_scene_tag" },
      { "x-request-id=q&page_no=1&page_size=1&query_start_time=yesterday", "query_start_time" },
    }
    for _, c in ipairs(cases) do
      local s, b = list(c[1])
      assert.equal(400, s, c[1])
      assert.equal("KOOPHONE.API.1000", b.error_code, c[1])
      assert.truthy(b.error_msg:find(c[2], 1, true), c[1] .. ": " .. b.error_msg)
    end
    -- the header alone does not do: the SDK sends x-request-id as a query parameter
    assert.equal(400, (list("page_no=1&page_size=1")))
  end)
end)

describe("CPH phones", function()
  local emu
  local base
  setup(function()
    emu = emulator.start{ scenario = { fleet = { phones = 500 }, durations = { restart = 0.5, ["phone-reset"] = 0.5 },
      overrides = { ph000009 = { command = "restart", status = -1 } } } }
    base = "/v1/" .. emu.project_id .. "/cloud-phone/phones"
  end)
  teardown(function() finish(emu) end)
  before_each(function() emu:reset() end)

  local function detail(id)
    local s, b = emu:call("GET", base .. "/" .. id)
    return s, b
  end

  it("shows a phone with the Go SDK's fields; unknown phone 404 CPS.0005", function()
    local s, b = detail("ph000001")
    assert.equal(200, s)
    for _, k in ipairs { "request_id", "phone_name", "server_id", "phone_id", "image_id", "image_version",
                         "vnc_enable", "phone_model_name", "status", "access_infos", "property", "metadata",
                         "phone_data_volume", "imei", "type", "traffic_type", "volume_mode",
                         "availability_zone", "has_encrypt", "create_time", "update_time" } do
      assert.is_not_nil(b[k], k)
    end
    assert.equal("ph000001", b.phone_id)
    assert.equal(2, b.status)
    assert.equal(15, #b.imei)
    s, b = detail("ph000500")
    assert.equal(404, s)
    assert.equal("CPS.0005", b.error_code)
    s = emu:call("GET", "/v1/other-project/cloud-phone/phones/ph000001")
    assert.equal(403, s)
  end)

  it("restart: 4 restarting, then 2 running, or -6 when the restart failed", function()
    local s, b = emu:call("POST", base .. "/batch-restart", { phones = { { phone_id = "ph000008" }, { phone_id = "ph000009" } } })
    assert.equal(200, s)
    assert.equal(2, #b.jobs)
    assert.equal(4, select(2, detail("ph000008")).status)
    sleep(0.6)
    assert.equal(2, select(2, detail("ph000008")).status)
    assert.equal(-6, select(2, detail("ph000009")).status)
  end)

  it("batch-reset takes the restart body, gives jobs ShowJob/ListJobs follow, resets (3) then runs", function()
    local s, b = emu:call("POST", base .. "/batch-reset",
      { phones = { { phone_id = "ph000002", property = '{"a":"b"}' }, { phone_id = "nosuch" } }, image_id = "img" })
    assert.equal(200, s)
    assert.matches("^%x+$", b.request_id)
    assert.equal("ph000002", b.jobs[1].phone_id)
    assert.equal("CPS.0004", b.jobs[2].error_code)
    assert.equal(3, select(2, detail("ph000002")).status)
    local _, j = emu:call("GET", "/v1/" .. emu.project_id .. "/cloud-phone/jobs/" .. b.jobs[1].job_id)
    assert.equal(1, j.status)
    sleep(0.6)
    _, j = emu:call("GET", "/v1/" .. emu.project_id .. "/cloud-phone/jobs?request_id=" .. b.request_id)
    assert.equal(1, j.count)
    assert.equal(2, j.jobs[1].status)
    assert.equal(2, select(2, detail("ph000002")).status)
    assert.equal(1, emu:executions("ph000002").executions.ph000002.reset)
    for _, bad in ipairs { { {}, "phones" }, { { phones = { { phone_id = "" } } }, "phone_id" },
                           { { phones = { { phone_id = "p", property = "x" } } }, "property" } } do
      local st, e = emu:call("POST", base .. "/batch-reset", bad[1])
      assert.equal(400, st)
      assert.equal("Parameter: " .. bad[2] .. " is invalid.", e.error_msg)
    end
  end)

  it("lists phones with offset/limit and filters; validates them (CPS.0004)", function()
    local seen, offset = {}, 0
    while true do
      local s, b = emu:call("GET", base .. "?offset=" .. offset .. "&limit=200")
      assert.equal(200, s)
      assert.equal(503, b.count)           -- 500 + the pages' 3 example phones
      for _, p in ipairs(b.phones) do
        assert.is_nil(seen[p.phone_id]); seen[p.phone_id] = true
      end
      if #b.phones < 200 then break end
      offset = offset + 200
    end
    local n = 0
    for _ in pairs(seen) do n = n + 1 end
    assert.equal(503, n)
    local _, b = emu:call("GET", base)
    assert.equal(100, #b.phones)           -- default limit
    _, b = emu:call("GET", base .. "?phone_name=ph00049")
    assert.equal(10, b.count)
    emu:call("POST", base .. "/batch-restart", { phones = { { phone_id = "ph000009" }, { phone_id = "ph000010" } } })
    _, b = emu:call("GET", base .. "?status=4")
    assert.equal(2, b.count)
    sleep(0.6)
    _, b = emu:call("GET", base .. "?status=-6")
    assert.equal(1, b.count)
    assert.equal("ph000009", b.phones[1].phone_id)
    _, b = emu:call("GET", base .. "?status=2&limit=1")
    assert.equal(502, b.count)
    for _, q in ipairs { "offset=-1", "offset=x", "limit=0", "limit=201", "status=5", "type=2" } do
      local s, e = emu:call("GET", base .. "?" .. q)
      assert.equal(400, s, q)
      assert.equal("CPS.0004", e.error_code, q)
      assert.truthy(e.error_msg:find(q:match("^(%a+)"), 1, true), q)
    end
  end)
end)

describe("the silent-install fault", function()
  local emu
  setup(function()
    emu = emulator.start{ scenario = { durations = { install = 0.2 },
      install_silent_fail = { ratio = 0.1, instances = { "kp000005" } } } }
  end)
  teardown(function() finish(emu) end)

  it("reports the job successful but never lists the app, on the seeded instances only", function()
    local list = ids(100)
    local b = install(emu, list)
    local jobs = wait_task(emu, b.data.data.task_id)
    for _, j in ipairs(jobs) do assert.equal(2, j.status) end
    local missing = {}
    for _, id in ipairs(list) do
      if not installed(emu, id)["com.example.game"] then missing[#missing + 1] = id end
    end
    assert.truthy(#missing >= 3 and #missing <= 25, "missing: " .. #missing)
    local has5 = false
    for _, id in ipairs(missing) do if id == "kp000005" then has5 = true end end
    assert.is_true(has5)
    -- the same instances fail again (seeded)
    emu:reset()
    wait_task(emu, install(emu, list).data.data.task_id)
    local again = {}
    for _, id in ipairs(list) do
      if not installed(emu, id)["com.example.game"] then again[#again + 1] = id end
    end
    assert.same(missing, again)
  end)
end)
