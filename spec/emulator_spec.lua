-- The emulator, endpoint by endpoint: each vendor page's example request gives
-- the page's response shape; documented errors; job lifecycles; faults;
-- accounting; TLS. Run: lua5.4 /usr/bin/busted spec/emulator_spec.lua
local emulator = require "spec.support.emulator"

local function sleep(s) os.execute("sleep " .. s) end

-- stop an emulator, failing when its error log has errors (Lua errors included)
local function finish(emu)
  local log = emu:error_log()
  emu:stop()
  assert.falsy(log:find("%[error%]") or log:find("%[alert%]") or log:find("%[crit%]"), log)
end

local function ids(n, fmt)
  local t = {}
  for i = 0, n - 1 do t[#t + 1] = string.format(fmt or "kp%06d", i) end
  return t
end

local function poll_task(emu, task_id, timeout)
  local deadline = os.time() + (timeout or 10)
  while true do
    local s, b = emu:call("GET", "/v1/instances/tasks/" .. task_id)
    assert.equal(200, s)
    local running = false
    for _, j in ipairs(b.data.jobs) do if j.status == 1 then running = true end end
    if not running or os.time() > deadline then return b end
    sleep(0.1)
  end
end

describe("sync-command (POST /v1/instances/sync-command)", function()
  local emu
  setup(function() emu = emulator.start{} end)
  teardown(function() finish(emu) end)

  it("answers the page's example request with the page's example shape", function()
    local s, b, h = emu:call("POST", "/v1/instances/sync-command",
      { command = "ls -l /system", instance_ids = { "a44uhlf7", "efjy72gs" } }, { ["x-request-id"] = "req-1" })
    assert.equal(200, s)
    assert.equal("req-1", h["x-request-id"])
    assert.equal("0", b.error_code)
    assert.equal("ok", b.error_msg)
    local r = b.data.cmd_results
    assert.equal(2, #r)
    assert.same({ instance_id = "a44uhlf7", status = -1, error_code = "CPS.0191", error_msg = "Run command failed.",
                  execute_msg = "ls: cannot access '/system': No such file or directory" }, r[1])
    assert.equal("efjy72gs", r[2].instance_id)
    assert.equal(2, r[2].status)
    assert.equal("", r[2].error_code)
    assert.equal("", r[2].error_msg)
    assert.truthy(r[2].execute_msg:find("build.prop", 1, true))
  end)

  it("gives realistic outputs for common commands", function()
    local function run(cmd)
      local s, b = emu:call("POST", "/v1/instances/sync-command", { command = cmd, instance_ids = { "kp000001" } })
      assert.equal(200, s)
      return b.data.cmd_results[1]
    end
    assert.equal("12", run("getprop ro.build.version.release").execute_msg)
    assert.equal("hello world", run("echo hello world").execute_msg)
    assert.truthy(run("pm list packages").execute_msg:find("^package:"))
    local other = run("whoami")
    assert.equal(2, other.status)
    assert.equal("", other.execute_msg)
  end)

  it("makes `sleep N` take N seconds", function()
    local _, _, _, info = emu:call("POST", "/v1/instances/sync-command", { command = "sleep 0.3", instance_ids = { "kp000001" } })
    assert.is_true(info.time >= 0.28)
  end)

  it("reports unknown instances inside the 200", function()
    local s, b = emu:call("POST", "/v1/instances/sync-command", { command = "echo x", instance_ids = { "kp000001", "nosuch" } })
    assert.equal(200, s)
    assert.same({ instance_id = "nosuch", status = -1, error_code = "CPS0005", error_msg = "Phone not found.",
                  execute_msg = emulator.null }, b.data.cmd_results[2])
  end)

  it("truncates execute_msg to 1024 bytes", function()
    local s, b = emu:call("POST", "/v1/instances/sync-command", { command = "echo " .. string.rep("y", 1000) .. string.rep("z", 10), instance_ids = { "kp000002" } })
    assert.equal(200, s)
    assert.equal(1010, #b.data.cmd_results[1].execute_msg)
    emu:config{ commands = { { match = "^big$", output = string.rep("x", 5000) } } }
    s, b = emu:call("POST", "/v1/instances/sync-command", { command = "big", instance_ids = { "kp000002" } })
    assert.equal(1024, #b.data.cmd_results[1].execute_msg)
    emu:reset()
  end)

  it("rejects a missing or wrong token with 401 KOOPHONE.API.0401", function()
    local body = { command = "echo x", instance_ids = { "kp000001" } }
    local s, b = emu:call("POST", "/v1/instances/sync-command", body, { ["X-Auth-Token"] = false })
    assert.equal(401, s)
    assert.same({ error_code = "KOOPHONE.API.0401", error_msg = "Unauthorized: invalid or expired token." }, b)
    s = emu:call("POST", "/v1/instances/sync-command", body, { ["x-auth-token"] = "wrong" })
    assert.equal(401, s)
  end)

  it("accepts the header names in any case", function()
    local s = emu:call("POST", "/v1/instances/sync-command", { command = "echo x", instance_ids = { "kp000001" } },
      { ["X-Auth-Token"] = false, ["x-auth-token"] = emu.token, ["x-request-id"] = false, ["X-REQUEST-ID"] = "A" })
    assert.equal(200, s)
  end)

  it("requires x-request-id (400 KOOPHONE.API.1000 naming the header), and still echoes one", function()
    local s, b, h = emu:call("POST", "/v1/instances/sync-command", { command = "echo x", instance_ids = { "kp000001" } },
      { ["x-request-id"] = false })
    assert.equal(400, s)
    assert.equal("KOOPHONE.API.1000", b.error_code)
    assert.truthy(b.error_msg:find("x-request-id", 1, true))
    assert.truthy(h["x-request-id"])
  end)

  it("validates the body: 400 KOOPHONE.API.1000", function()
    local cases = {
      { "not json", "{" },
      { "missing command", { instance_ids = { "kp000001" } } },
      { "empty command", { command = "", instance_ids = { "kp000001" } } },
      { "command too long", { command = string.rep("a", 1025), instance_ids = { "kp000001" } } },
      { "control character", { command = "ls\n/", instance_ids = { "kp000001" } } },
      { "no ids", { command = "ls", instance_ids = {} } },
      { "ids not a list", { command = "ls", instance_ids = "kp000001" } },
      { "33 ids", { command = "ls", instance_ids = ids(33) } },
      { "id too long", { command = "ls", instance_ids = { string.rep("a", 33) } } },
    }
    for _, c in ipairs(cases) do
      local s, b = emu:call("POST", "/v1/instances/sync-command", c[2])
      assert.equal(400, s, c[1])
      assert.equal("KOOPHONE.API.1000", b.error_code, c[1])
    end
    local s, b = emu:call("POST", "/v1/instances/sync-command", { command = "ls", instance_ids = ids(33) })
    assert.truthy(b.error_msg:find("instance_ids", 1, true) and b.error_msg:find("32", 1, true))
    s = emu:call("POST", "/v1/instances/sync-command", { command = "ls", instance_ids = ids(32) })
    assert.equal(200, s)
  end)

  it("enforces the documented charset only in strict mode", function()
    emu:config{ strict_command_charset = true }
    local s = emu:call("POST", "/v1/instances/sync-command", { command = "ls -l /system", instance_ids = { "kp000001" } })
    assert.equal(400, s)
    s = emu:call("POST", "/v1/instances/sync-command", { command = "ls", instance_ids = { "kp000001" } })
    assert.equal(200, s)
    emu:reset()
    s = emu:call("POST", "/v1/instances/sync-command", { command = "ls -l /system", instance_ids = { "kp000001" } })
    assert.equal(200, s)
  end)

  it("answers a wrong method with 405 and an unknown path with 404", function()
    assert.equal(405, (emu:call("GET", "/v1/instances/sync-command")))
    assert.equal(404, (emu:call("GET", "/v1/instances/nothing")))
  end)
end)

describe("async-command and the task query", function()
  local emu
  setup(function() emu = emulator.start{ scenario = { durations = { default = 0.3 } } } end)
  teardown(function() finish(emu) end)

  it("answers the page's example with a task id and one job per instance", function()
    local s, b = emu:call("POST", "/v1/instances/async-command", { command = "ls -l /system", instance_ids = { "a44uhlf7", "efjy72gs" } })
    assert.equal(200, s)
    assert.equal("0", b.error_code)
    assert.equal("ok", b.error_msg)
    assert.truthy(b.data.task_id:match("^%x+$") and #b.data.task_id == 32)
    assert.equal(2, #b.data.cmd_jobs)
    assert.equal("a44uhlf7", b.data.cmd_jobs[1].instance_id)
    assert.equal("efjy72gs", b.data.cmd_jobs[2].instance_id)
    assert.is_string(b.data.cmd_jobs[1].job_id)
  end)

  it("runs jobs: status 1 first, then 2 or -1 after the duration", function()
    local _, b = emu:call("POST", "/v1/instances/async-command", { command = "echo done", instance_ids = { "kp000001", "a44uhlf7", "ghost" } })
    local task = b.data.task_id
    local s, t = emu:call("GET", "/v1/instances/tasks/" .. task)
    assert.equal(200, s)
    assert.equal("0", t.error_code)
    local j = t.data.jobs
    assert.equal(3, #j)
    assert.same({ job_id = b.data.cmd_jobs[1].job_id, status = 1, error_code = "", error_msg = "",
                  execute_msg = emulator.null }, { job_id = j[1].job_id, status = j[1].status,
                  error_code = j[1].error_code, error_msg = j[1].error_msg, execute_msg = j[1].execute_msg })
    -- unknown ids fail at once, like the task page's example
    assert.equal(-1, j[3].status)
    assert.equal("CPS0005", j[3].error_code)
    assert.equal("Phone not found.", j[3].error_msg)
    sleep(0.4)
    s, t = emu:call("GET", "/v1/instances/tasks/" .. task)
    assert.equal(2, t.data.jobs[1].status)
    assert.equal("done", t.data.jobs[1].execute_msg)
    assert.equal(2, t.data.jobs[2].status)
  end)

  it("uses sleep N, commands and overrides for durations and results", function()
    emu:config{
      commands = { { match = "^getprop", duration = 0.1, output = "12" } },
      overrides = { kp000007 = { status = -1, error_code = "CPS.0191", error_msg = "Run command failed.", execute_msg = "boom", duration = 0.2 } },
    }
    local _, b = emu:call("POST", "/v1/instances/async-command", { command = "getprop ro.x", instance_ids = { "kp000001", "kp000007" } })
    local t = poll_task(emu, b.data.task_id)
    assert.equal(2, t.data.jobs[1].status)
    assert.equal("12", t.data.jobs[1].execute_msg)
    assert.same({ job_id = b.data.cmd_jobs[2].job_id, status = -1, error_code = "CPS.0191", error_msg = "Run command failed.", execute_msg = "boom" }, t.data.jobs[2])
    _, b = emu:call("POST", "/v1/instances/async-command", { command = "sleep 1", instance_ids = { "kp000001" } })
    sleep(0.5)
    local _, t2 = emu:call("GET", "/v1/instances/tasks/" .. b.data.task_id)
    assert.equal(1, t2.data.jobs[1].status)
    emu:reset()
  end)

  it("fails a seeded share of jobs with fail_ratio", function()
    emu:config{ fail_ratio = 0.5, durations = { default = 0 } }
    local _, b = emu:call("POST", "/v1/instances/async-command", { command = "echo r", instance_ids = ids(100) })
    local _, t = emu:call("GET", "/v1/instances/tasks/" .. b.data.task_id)
    local failed = 0
    for _, j in ipairs(t.data.jobs) do if j.status == -1 then failed = failed + 1 end end
    assert.is_true(failed > 25 and failed < 75)
    -- deterministic: the same ids fail again
    local _, b2 = emu:call("POST", "/v1/instances/async-command", { command = "echo r", instance_ids = ids(100) })
    local _, t2 = emu:call("GET", "/v1/instances/tasks/" .. b2.data.task_id)
    for i, j in ipairs(t2.data.jobs) do assert.equal(t.data.jobs[i].status, j.status) end
    emu:reset()
  end)

  it("accepts 100 ids, rejects 101", function()
    assert.equal(200, (emu:call("POST", "/v1/instances/async-command", { command = "ls", instance_ids = ids(100) })))
    local s, b = emu:call("POST", "/v1/instances/async-command", { command = "ls", instance_ids = ids(101) })
    assert.equal(400, s)
    assert.equal("KOOPHONE.API.1000", b.error_code)
    assert.truthy(b.error_msg:find("100", 1, true))
  end)

  it("answers an unknown task with 400 Task not found, and requires x-request-id", function()
    local s, b = emu:call("GET", "/v1/instances/tasks/6837531fd3f54550927b930180a706bf")
    assert.equal(400, s)
    assert.same({ error_code = "KOOPHONE.API.1000", error_msg = "Task not found." }, b)
    s = emu:call("GET", "/v1/instances/tasks/x", nil, { ["x-request-id"] = false })
    assert.equal(400, s)
  end)
end)

describe("app install (POST /v1/instances/app/install)", function()
  local emu
  local example = {
    fast_install = 1, object_name = "com.tencent.mm", file_name = "meituan.apk", object_version = "8.0.58",
    object_size = 120, biz_type = "apk", content_type = "application/octet-stream", content_md5 = "fghfg",
    install_package_url = "https://obs-kpxa-zg.obs.cn-north-7.ulanqab.huawei.com:443/chp_admin/x.apk?AccessKeyId=A&Signature=B",
    instance_id_list = { "XvH39QVW", "Vpp8rC4Y" },
  }
  local function with(changes)
    local t = {}
    for k, v in pairs(example) do t[k] = v end
    for k, v in pairs(changes) do if v == "<nil>" then t[k] = nil else t[k] = v end end
    return t
  end
  setup(function() emu = emulator.start{ scenario = { durations = { install = 0.3 } } } end)
  teardown(function() finish(emu) end)

  it("answers the page's example with data.data.task_id (ZGCA...) and cmd_jobs", function()
    local s, b = emu:call("POST", "/v1/instances/app/install", example, { ["x-request-id"] = false })
    assert.equal(200, s)
    assert.equal("0", b.error_code)
    assert.equal("OK", b.error_msg)
    assert.truthy(b.data.data.task_id:match("^ZGCA"))
    assert.equal(2, #b.data.data.cmd_jobs)
    assert.equal("XvH39QVW", b.data.data.cmd_jobs[1].instance_id)
    local t = poll_task(emu, b.data.data.task_id)
    assert.equal(2, t.data.jobs[1].status)
    assert.equal(1, emu:executions().executions.XvH39QVW["install com.tencent.mm"])
  end)

  it("accepts fast_install and object_size as strings", function()
    assert.equal(200, (emu:call("POST", "/v1/instances/app/install", with{ fast_install = "0", object_size = "120" })))
    assert.equal(200, (emu:call("POST", "/v1/instances/app/install", with{ fast_install = "<nil>" })))
  end)

  it("documents its errors", function()
    local cases = {
      { with{ fast_install = 2 }, "KOOPHONE.API.3008" },
      { with{ fast_install = "yes" }, "KOOPHONE.API.3008" },
      { with{ object_size = "12a" }, "KOOPHONE.API.62006", "The app package size is not a digit." },
      { with{ object_size = -1 }, "KOOPHONE.API.62006", "The app package size is not a digit." },
      { with{ object_size = 5000 }, "KOOPHONE.API.62006", "The app package is too large." },
      { with{ object_name = string.rep("a", 101) }, "KOOPHONE.API.1000" },
      { with{ biz_type = string.rep("a", 65) }, "KOOPHONE.API.1000" },
      { with{ content_md5 = string.rep("a", 201) }, "KOOPHONE.API.1000" },
      { with{ install_package_url = "https://x/" .. string.rep("a", 2000) }, "KOOPHONE.API.1000" },
      { with{ install_package_url = "ftp://x/y.apk" }, "KOOPHONE.API.1000" },
      { with{ instance_id_list = {} }, "KOOPHONE.API.1000" },
      { with{ instance_id_list = ids(101) }, "KOOPHONE.API.1000" },
      { with{ file_name = "<nil>" }, "KOOPHONE.API.1000" },
    }
    for i, c in ipairs(cases) do
      local s, b = emu:call("POST", "/v1/instances/app/install", c[1])
      assert.equal(400, s, "case " .. i)
      assert.equal(c[2], b.error_code, "case " .. i)
      if c[3] then assert.equal(c[3], b.error_msg) end
    end
  end)
end)

describe("task and job records (retention)", function()
  local emu
  setup(function()
    emu = emulator.start{ scenario = { durations = { default = 0.2 }, retention = 1 } }
  end)
  teardown(function() finish(emu) end)

  -- a long-lived emulator serving 100,000-job runs must not grow for ever,
  -- nor forget a task whose jobs a client still follows
  it("keeps a task, and a restart's jobs, `retention` seconds after they end, then forgets them", function()
    local _, b = emu:call("POST", "/v1/instances/async-command", { command = "ls", instance_ids = ids(3) })
    local task = b.data.task_id
    local base = "/v1/" .. emu.project_id .. "/cloud-phone"
    local _, r = emu:call("POST", base .. "/phones/batch-restart", { phones = { { phone_id = "ph000001" } } })
    sleep(0.8) -- jobs ended 0.6 s ago: still there
    local s, t = emu:call("GET", "/v1/instances/tasks/" .. task)
    assert.equal(200, s)
    assert.equal(3, #t.data.jobs)
    assert.equal(2, t.data.jobs[1].status)
    local _, l = emu:call("GET", base .. "/jobs?request_id=" .. r.request_id)
    assert.equal(1, #l.jobs)
    sleep(1.2) -- 1.8 s after: gone, as a task that never was
    s, t = emu:call("GET", "/v1/instances/tasks/" .. task)
    assert.equal(400, s)
    assert.equal("Task not found.", t.error_msg)
    s = emu:call("GET", base .. "/jobs/" .. r.jobs[1].job_id)
    assert.equal(404, s)
  end)
end)

describe("CPH batch-restart, ShowJob and ListJobs", function()
  local emu, base
  local prop = '{"phone_num":"13666666666","imsi":"460021624617113","iccid":"42947a38410b137c","wifi_name":"test_wifi"}'
  setup(function()
    emu = emulator.start{ scenario = { durations = { restart = 0.3 } } }
    base = "/v1/" .. emu.project_id .. "/cloud-phone"
  end)
  teardown(function() finish(emu) end)

  it("answers the page's example; unknown phones get a CPS.0004 entry", function()
    local s, b = emu:call("POST", base .. "/phones/batch-restart", {
      phones = { { phone_id = "a7f3a1c5258347d6b6f1def79e11f2bc", property = prop },
                 { phone_id = "1678567b8bab40f93711234cb80d0764", property = prop },
                 { phone_id = "not-a-phone" } },
      image_id = "1564567b8bab40f34711234cb80d8574" }, { ["x-request-id"] = false })
    assert.equal(200, s)
    assert.truthy(b.request_id:match("^%x+$") and #b.request_id == 32)
    assert.is_nil(b.error_code)
    assert.equal(3, #b.jobs)
    assert.equal("a7f3a1c5258347d6b6f1def79e11f2bc", b.jobs[1].phone_id)
    assert.is_string(b.jobs[1].job_id)
    assert.same({ phone_id = "not-a-phone", error_code = "CPS.0004", error_msg = "Parameter: phone_id is invalid." }, b.jobs[3])
  end)

  it("follows a job with ShowJob: status 1 then 2", function()
    local _, b = emu:call("POST", base .. "/phones/batch-restart", { phones = { { phone_id = "ph000001" } } })
    local job = b.jobs[1].job_id
    local s, j = emu:call("GET", base .. "/jobs/" .. job)
    assert.equal(200, s)
    assert.equal(1, j.status)
    assert.equal(job, j.job_id)
    assert.equal("ph000001", j.phone_id)
    assert.equal(b.request_id, j.request_id)
    assert.is_string(j.server_id)
    assert.truthy(j.begin_time:match("^%d%d%d%d%-%d%d%-%d%dT"))
    sleep(0.4)
    s, j = emu:call("GET", base .. "/jobs/" .. job)
    assert.equal(2, j.status)
    assert.equal(emulator.null, j.error_code)
    assert.is_string(j.end_time)
    s, j = emu:call("GET", base .. "/jobs/nosuchjob")
    assert.equal(404, s)
    assert.same({ error_code = "CPS.0005", error_msg = "Job not found." }, j)
  end)

  it("lists a request's jobs with ListJobs, paging with offset/limit", function()
    local phones = {}
    for _, id in ipairs(ids(150, "ph%06d")) do phones[#phones + 1] = { phone_id = id } end
    local _, b = emu:call("POST", base .. "/phones/batch-restart", { phones = phones })
    local s, l = emu:call("GET", base .. "/jobs?request_id=" .. b.request_id)
    assert.equal(200, s)
    assert.equal(150, l.count)
    assert.equal(100, #l.jobs)
    assert.equal(b.request_id, l.request_id)
    s, l = emu:call("GET", base .. "/jobs?request_id=" .. b.request_id .. "&offset=140&limit=50")
    assert.equal(10, #l.jobs)
    assert.equal(b.jobs[141].job_id, l.jobs[1].job_id)
    local _, b2 = emu:call("POST", base .. "/phones/batch-restart", { phones = { { phone_id = "ph000001" } } })
    s, l = emu:call("GET", base .. "/jobs?request_ids=" .. b.request_id .. "," .. b2.request_id .. "&offset=100")
    assert.equal(151, l.count)
    assert.equal(51, #l.jobs)
    s, l = emu:call("GET", base .. "/jobs?request_id=unknown")
    assert.equal(200, s)
    assert.same({}, l.jobs)
    assert.equal(0, l.count)
  end)

  it("rejects out-of-bounds ListJobs parameters with 400 CPS.0004 naming them", function()
    local twenty_one = table.concat(ids(21, "r%d"), ",")
    local cases = {
      { "", "request_id" }, { "?request_id=a&limit=0", "limit" }, { "?request_id=a&limit=101", "limit" },
      { "?request_id=a&offset=-1", "offset" }, { "?request_id=a&offset=x", "offset" },
      { "?request_ids=" .. twenty_one, "request_ids" },
    }
    for _, c in ipairs(cases) do
      local s, b = emu:call("GET", base .. "/jobs" .. c[1])
      assert.equal(400, s, c[1])
      assert.equal("CPS.0004", b.error_code)
      assert.equal("Parameter: " .. c[2] .. " is invalid.", b.error_msg)
    end
    assert.equal(200, (emu:call("GET", base .. "/jobs?request_ids=" .. table.concat(ids(20, "r%d"), ","))))
  end)

  it("validates batch-restart bodies with 400 CPS.0004", function()
    local cases = {
      { { phones = {} }, "phones" },
      { { phones = { { phone_id = 5 } } }, "phone_id" },
      { { phones = { { phone_id = string.rep("p", 65) } } }, "phone_id" },
      { { phones = { { phone_id = "ph000001", property = "not json" } } }, "property" },
      { { phones = { { phone_id = "ph000001", property = { a = 1 } } } }, "property" },
      { { phones = { { phone_id = "ph000001", property = "[1]" } } }, "property" },
    }
    for _, c in ipairs(cases) do
      local s, b = emu:call("POST", base .. "/phones/batch-restart", c[1])
      assert.equal(400, s)
      assert.same({ error_code = "CPS.0004", error_msg = "Parameter: " .. c[2] .. " is invalid." }, b)
    end
    local many = {}
    for _, id in ipairs(ids(201, "ph%06d")) do many[#many + 1] = { phone_id = id } end
    assert.equal(400, (emu:call("POST", base .. "/phones/batch-restart", { phones = many })))
  end)

  it("checks the token (401 CPS.0001) and the project id (403 CPS.0002)", function()
    local s, b = emu:call("POST", base .. "/phones/batch-restart", { phones = { { phone_id = "ph000001" } } }, { ["X-Auth-Token"] = "bad" })
    assert.equal(401, s)
    assert.equal("CPS.0001", b.error_code)
    s, b = emu:call("POST", "/v1/other-project/cloud-phone/phones/batch-restart", { phones = { { phone_id = "ph000001" } } })
    assert.equal(403, s)
    assert.equal("CPS.0002", b.error_code)
  end)
end)

describe("IAM tokens (POST /v3/auth/tokens)", function()
  local emu
  local function body(password, scope)
    return { auth = { identity = { methods = { "password" }, password = { user = {
      name = "emulator-user", password = password or "emulator-password", domain = { name = "emulator-domain" } } } },
      scope = scope or { project = { id = "emulator-project" } } } }
  end
  setup(function() emu = emulator.start{ scenario = { token_ttl = 1 } } end)
  teardown(function() finish(emu) end)

  it("issues a token in X-Subject-Token that the APIs accept until it expires", function()
    local s, b, h = emu:call("POST", "/v3/auth/tokens", body(), { ["X-Auth-Token"] = false })
    assert.equal(201, s)
    local tok = h["x-subject-token"]
    assert.is_string(tok)
    assert.same({ "password" }, b.token.methods)
    assert.equal("emulator-project", b.token.project.id)
    assert.truthy(b.token.expires_at:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d+Z$"))
    assert.is_string(b.token.issued_at)
    assert.equal("emulator-user", b.token.user.name)
    s = emu:call("GET", "/v1/instances/tasks/x", nil, { ["X-Auth-Token"] = tok })
    assert.equal(400, s) -- authorised: task not found
    sleep(1.2)
    s = emu:call("GET", "/v1/instances/tasks/x", nil, { ["X-Auth-Token"] = tok })
    assert.equal(401, s)
  end)

  it("scopes by project name too", function()
    assert.equal(201, (emu:call("POST", "/v3/auth/tokens", body(nil, { project = { name = "cn-east-3" } }))))
  end)

  it("answers wrong credentials with 401 and the IAM error body", function()
    local s, b, h = emu:call("POST", "/v3/auth/tokens", body("wrong"))
    assert.equal(401, s)
    assert.same({ error = { code = 401, message = "The username or password is wrong.", title = "Unauthorized" } }, b)
    assert.is_nil(h["x-subject-token"])
  end)
end)

describe("fault injection", function()
  local emu
  local sync = { command = "echo f", instance_ids = { "kp000001" } }
  setup(function() emu = emulator.start{ scenario = { faults = { { endpoint = "jobs", kind = "500", every = 2 } } } } end)
  teardown(function() finish(emu) end)
  before_each(function() emu:reset(); emu:clear_faults() end)

  local function count_exec() return emu:executions().total end

  it("500 before processing: envelope KOOPHONE.API.9999, nothing runs", function()
    emu:add_fault{ endpoint = "sync-command", kind = "500" }
    local s, b = emu:call("POST", "/v1/instances/sync-command", sync)
    assert.equal(500, s)
    assert.equal("KOOPHONE.API.9999", b.error_code)
    assert.equal(0, count_exec())
  end)

  it("503 and 429 carry Retry-After and never execute", function()
    emu:add_fault{ endpoint = "sync-command", kind = "503", retry_after = 3, count = 1 }
    emu:add_fault{ endpoint = "sync-command", kind = "429", count = 1 }
    local s, _, h = emu:call("POST", "/v1/instances/sync-command", sync)
    assert.equal(503, s)
    assert.equal("3", h["retry-after"])
    s, _, h = emu:call("POST", "/v1/instances/sync-command", sync)
    assert.equal(429, s)
    assert.equal("1", h["retry-after"])
    assert.equal(0, count_exec())
    -- count reached: back to normal
    assert.equal(200, (emu:call("POST", "/v1/instances/sync-command", sync)))
    local f = emu:faults().faults
    assert.equal(1, f[1].fired)
    assert.equal(1, f[2].fired)
  end)

  it("reset closes the connection without a response, after running the command", function()
    emu:add_fault{ endpoint = "sync-command", kind = "reset" }
    local s, _, _, info = emu:call("POST", "/v1/instances/sync-command", sync)
    assert.equal(0, s)
    assert.equal(52, info.rc) -- curl: empty reply from server
    assert.equal(1, count_exec())
  end)

  it("stall answers nothing for `seconds`, then closes", function()
    emu:add_fault{ endpoint = "task", kind = "stall", seconds = 0.5 }
    local s, _, _, info = emu:call("GET", "/v1/instances/tasks/x")
    assert.equal(0, s)
    assert.equal(52, info.rc)
    assert.is_true(info.time >= 0.45)
    emu:clear_faults()
    emu:add_fault{ endpoint = "task", kind = "stall", seconds = 3 }
    s, _, _, info = emu:call("GET", "/v1/instances/tasks/x", nil, nil, { timeout = 1 })
    assert.equal(28, info.rc) -- curl: timeout
  end)

  it("truncate sends part of the body under the full Content-Length", function()
    emu:add_fault{ endpoint = "sync-command", kind = "truncate" }
    local _, _, h, info = emu:call("POST", "/v1/instances/sync-command", sync)
    assert.equal(18, info.rc) -- curl: partial file
    assert.is_true(#info.raw < tonumber(h["content-length"]))
    assert.equal(1, count_exec())
  end)

  it("malformed answers 200 with invalid JSON", function()
    emu:add_fault{ endpoint = "sync-command", kind = "malformed" }
    local s, b = emu:call("POST", "/v1/instances/sync-command", sync)
    assert.equal(200, s)
    assert.is_string(b) -- not decodable
  end)

  it("missing drops a required field", function()
    emu:add_fault{ endpoint = "sync-command", kind = "missing" }
    emu:add_fault{ endpoint = "restart", kind = "missing" }
    local s, b = emu:call("POST", "/v1/instances/sync-command", sync)
    assert.equal(200, s)
    assert.equal("0", b.error_code)
    assert.is_nil(b.data)
    s, b = emu:call("POST", "/v1/" .. emu.project_id .. "/cloud-phone/phones/batch-restart", { phones = { { phone_id = "ph000001" } } })
    assert.is_string(b.request_id)
    assert.is_nil(b.jobs)
  end)

  it("wrong_types changes field types", function()
    emu:add_fault{ endpoint = "sync-command", kind = "wrong_types" }
    local s, b = emu:call("POST", "/v1/instances/sync-command", sync)
    assert.equal(200, s)
    assert.is_nil(b.data.cmd_results[1]) -- an object, not a list
    assert.equal("two", b.data.cmd_results["1"].status)
  end)

  it("slow_body spreads the body over `seconds`", function()
    emu:add_fault{ endpoint = "sync-command", kind = "slow_body", seconds = 0.5 }
    local s, b, _, info = emu:call("POST", "/v1/instances/sync-command", sync)
    assert.equal(200, s)
    assert.equal("f", b.data.cmd_results[1].execute_msg)
    assert.is_true(info.time >= 0.4)
  end)

  it("fires every Nth request, and by seeded probability", function()
    emu:reset() -- restores the scenario's fault: jobs, 500, every 2
    local base = "/v1/" .. emu.project_id .. "/cloud-phone/jobs?request_id=a"
    local got = {}
    for i = 1, 4 do got[i] = (emu:call("GET", base)) end
    assert.same({ 200, 500, 200, 500 }, got)
    emu:clear_faults()
    emu:add_fault{ endpoint = "*", kind = "503", probability = 0.5 }
    local n = 0
    for _ = 1, 40 do if emu:call("GET", "/v1/instances/tasks/x") == 503 then n = n + 1 end end
    assert.is_true(n > 8 and n < 32)
  end)

  it("never applies to the control API; rejects bad faults", function()
    emu:add_fault{ endpoint = "*", kind = "500" }
    local b, s = emu:control("GET", "/_emulator/health")
    assert.equal(200, s)
    b, s = emu:control("POST", "/_emulator/faults", { kind = "explode" })
    assert.equal(400, s)
    b, s = emu:control("POST", "/_emulator/faults", { kind = "500", endpoint = "nowhere" })
    assert.equal(400, s)
    b, s = emu:control("POST", "/_emulator/config", { faults = { { kind = "nope" } } })
    assert.equal(400, s)
    assert.truthy(b.error:find("faults[1]", 1, true))
  end)
end)

describe("accounting and the control API", function()
  local emu
  setup(function() emu = emulator.start{ token = "secret-token", fleet = 50 } end)
  teardown(function() finish(emu) end)
  before_each(function() emu:reset() end)

  it("uses the --token and --fleet options", function()
    assert.equal("secret-token", emu.token)
    local _, b = emu:call("POST", "/v1/instances/sync-command", { command = "echo", instance_ids = { "kp000049", "kp000050" } })
    assert.equal(2, b.data.cmd_results[1].status)
    assert.equal("CPS0005", b.data.cmd_results[2].error_code)
  end)

  it("logs every vendor request with the token redacted", function()
    emu:call("POST", "/v1/instances/sync-command", { command = "echo", instance_ids = { "kp000001" } }, { ["x-request-id"] = "log-1" })
    emu:call("GET", "/v1/instances/tasks/none")
    local r = emu:requests()
    assert.equal(2, r.count)
    assert.equal("sync-command", r.requests[1].endpoint)
    assert.equal("POST", r.requests[1].method)
    assert.equal("/v1/instances/sync-command", r.requests[1].path)
    assert.equal("<redacted>", r.requests[1].headers["x-auth-token"])
    assert.equal("log-1", r.requests[1].headers["x-request-id"])
    assert.equal(200, r.requests[1].status)
    assert.is_true(r.requests[1].body_size > 0)
    assert.equal(400, r.requests[2].status)
    local only = emu:requests{ endpoint = "task" }
    assert.equal(1, only.count)
    assert.equal(1, emu:requests{ limit = 1 }.count)
    assert.is_nil(emu:requests().requests[1].headers["X-Auth-Token"])
    assert.falsy(require("cjson").encode(emu:requests()):find("secret-token", 1, true))
  end)

  it("counts executions per instance and command; max shows repeats", function()
    emu:call("POST", "/v1/instances/sync-command", { command = "echo a", instance_ids = { "kp000001", "kp000002" } })
    emu:call("POST", "/v1/instances/async-command", { command = "echo a", instance_ids = { "kp000001", "nosuch" } })
    local e = emu:executions()
    assert.equal(3, e.total)
    assert.equal(2, e.max)
    assert.equal(2, e.executions.kp000001["echo a"])
    assert.equal(1, emu:executions("kp000002").total)
    emu:reset()
    e = emu:executions()
    assert.equal(0, e.total)
    assert.equal(0, e.max)
  end)

  it("reports stats: requests, by endpoint, connections and peak in-flight", function()
    emu:config{ latency = { task = 0.3 } }
    local cmds = {}
    for i = 1, 4 do
      cmds[i] = "curl -s -o /dev/null -H 'X-Auth-Token: secret-token' -H 'x-request-id: p" .. i .. "' " .. emu.url .. "/v1/instances/tasks/t &"
    end
    os.execute("unset LD_PRELOAD; " .. table.concat(cmds, " ") .. " wait")
    local st = emu:stats()
    assert.equal(4, st.requests)
    assert.equal(4, st.by_endpoint.task)
    assert.equal(4, st.connections)
    assert.is_true(st.peak_inflight >= 2)
    assert.is_true(st.peak_inflight_by_endpoint.task >= 2)
    assert.equal(0, st.inflight)
  end)

  it("applies per-endpoint latency and merges config at run time", function()
    local cfg = emu:config{ latency = { ["sync-command"] = 0.3 }, overrides = { kp000003 = { status = -1, error_code = "E1", error_msg = "no" } } }
    assert.equal(0.3, cfg.latency["sync-command"])
    assert.is_table(cfg.overrides.a44uhlf7) -- built-in override kept
    local _, b, _, info = emu:call("POST", "/v1/instances/sync-command", { command = "echo", instance_ids = { "kp000003" } })
    assert.is_true(info.time >= 0.28)
    assert.equal("E1", b.data.cmd_results[1].error_code)
    local _, s = emu:control("POST", "/_emulator/config", { fleet = "many" })
    assert.equal(400, s)
    emu:reset()
    assert.is_nil(emu:config().latency["sync-command"])
  end)

  it("keeps the effective config readable, token included", function()
    local cfg = emu:config()
    assert.equal("secret-token", cfg.token)
    assert.equal("emulator-project", cfg.project_id)
    assert.equal(50, cfg.fleet.instances)
  end)
end)

describe("--tls", function()
  local emu
  setup(function() emu = emulator.start{ tls = true } end)
  teardown(function() finish(emu) end)

  it("serves HTTPS with its own certificate, HTTP/2 via ALPN and HTTP/1.1", function()
    assert.truthy(emu.url:match("^https://127%.0%.0%.1:%d+$"))
    local f = io.open(emu.cert)
    assert.truthy(f); f:close()
    local s, b, _, info = emu:call("POST", "/v1/instances/sync-command", { command = "echo tls", instance_ids = { "kp000001" } }, nil, { http2 = true })
    assert.equal(200, s)
    assert.equal("tls", b.data.cmd_results[1].execute_msg)
    assert.equal("2", info.http_version)
    s, _, _, info = emu:call("GET", "/v1/instances/tasks/x", nil, nil, { http1 = true })
    assert.equal(400, s)
    assert.equal("1.1", info.http_version)
  end)

  it("prints env lines with the CA file", function()
    local out = emulator.run("curl -s --cacert " .. emu.cert .. " " .. emu.url .. "/_emulator/env")
    assert.truthy(out:find("export KOOPHONE_CA_FILE='" .. emu.prefix .. "/cert.pem'", 1, true))
    assert.truthy(out:find("export KOOPHONE_ENDPOINT='" .. emu.url .. "'", 1, true))
  end)

  it("has no Lua errors in its error log", function()
    assert.falsy(emu:error_log():find("%[error%]"))
  end)
end)

describe("the command-line script", function()
  local script = emulator.shell_quote(emulator.script)

  it("prints shell export lines with --env", function()
    local out, rc = emulator.run(script .. " start --env --token envtok --project-id p1 --fleet 3")
    assert.equal(0, rc)
    local url = out:match("export KOOPHONE_ENDPOINT='([^']+)'")
    assert.truthy(url)
    assert.truthy(out:find("export KOOPHONE_CPH_ENDPOINT='" .. url .. "'", 1, true))
    assert.truthy(out:find("export KOOPHONE_TOKEN='envtok'", 1, true))
    assert.truthy(out:find("export KOOPHONE_PROJECT_ID='p1'", 1, true))
    assert.falsy(out:find("KOOPHONE_CA_FILE", 1, true))
    local _, rc2 = emulator.run(script .. " stop " .. url)
    assert.equal(0, rc2)
  end)

  it("refuses an invalid scenario with the reason", function()
    local f = os.tmpname()
    local h = io.open(f, "w"); h:write('{"faults":[{"kind":"boom"}]}'); h:close()
    local out, rc = emulator.run(script .. " start --scenario " .. f .. " 2>&1")
    os.remove(f)
    assert.is_true(rc ~= 0)
    assert.truthy(out:find("fault kind", 1, true))
  end)

  it("starts, refuses a busy port, and stops twice safely", function()
    local emu = emulator.start{}
    local out, rc = emulator.run(emulator.shell_quote(emulator.script) .. " start --port " .. emu.port .. " 2>&1")
    assert.is_true(rc ~= 0)
    assert.truthy(out:find("already", 1, true))
    emu:stop()
    emu:stop()
    local _, rc2 = emulator.run("curl -s -o /dev/null --max-time 1 " .. emu.url .. "/_emulator/health")
    assert.is_true(rc2 ~= 0)
    local f = io.open(emu.prefix .. "/conf/nginx.conf")
    assert.is_nil(f)
  end)
end)
