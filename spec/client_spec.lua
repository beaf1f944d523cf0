-- The client: one method per endpoint, every documented limit checked
-- before sending, vendor failures as rows or structured errors.
local koophone = require "koophone"
local emulator = require "spec.support.emulator"

describe("koophone client", function()
  local emu, client
  setup(function()
    emu = emulator.start{ scenario = { durations = { default = 0.2, install = 0.3, restart = 0.3 } } }
    client = assert(koophone.new{ token = emu.token, endpoint = emu.url, cph_endpoint = emu.url,
                                  project_id = emu.project_id, poll_interval = 0.05 })
  end)
  teardown(function() emu:stop() end)
  before_each(function() emu:reset() end)

  local function sent() return emu:requests().count end

  describe("koophone.new", function()
    it("needs a token, from the options or KOOPHONE_TOKEN", function()
      local c, _, err = koophone.new{ endpoint = emu.url, token = nil }
      if os.getenv("KOOPHONE_TOKEN") then return end
      assert.is_nil(c)
      assert.equal("token", err.field)
    end)

    it("refuses plain http:// to anything but loopback unless allow_insecure", function()
      local c, _, err = koophone.new{ token = "t", endpoint = "http://phones.example.com" }
      assert.is_nil(c)
      assert.equal("endpoint", err.field)
      assert.matches("allow_insecure", err.message)
      assert.truthy(koophone.new{ token = "t", endpoint = "http://phones.example.com", allow_insecure = true })
      assert.truthy(koophone.new{ token = "t", endpoint = "http://localhost:8080" })
    end)

    it("checks numeric options", function()
      local _, _, err = koophone.new{ token = "t", timeout = -1 }
      assert.equal("timeout", err.field)
      _, _, err = koophone.new{ token = "t", retries = 1.5 }
      assert.equal("retries", err.field)
    end)
  end)

  describe("sync_command", function()
    it("runs the page's example and returns one row per instance, failures included", function()
      local rows = assert(client:sync_command("ls -l /system", { "a44uhlf7", "efjy72gs" }))
      assert.is_string(rows.request_id)
      assert.equal(2, #rows)
      assert.same({ "a44uhlf7", "failed", -1, "CPS.0191", "Run command failed." },
        { rows[1].id, rows[1].status, rows[1].vendor_status, rows[1].code, rows[1].message })
      assert.matches("No such file", rows[1].output)
      assert.equal("a44uhlf7", rows[1].instance_id)
      assert.same({ "efjy72gs", "ok", 2 }, { rows[2].id, rows[2].status, rows[2].vendor_status })
      assert.is_nil(rows[2].code) -- "" from the vendor becomes nil
    end)

    it("gives an unknown instance a failed row, not an error", function()
      local rows = assert(client:sync_command("getprop ro.build.version.release", { "kp000001", "ghost001" }))
      assert.equal("ok", rows[1].status)
      assert.equal("12", rows[1].output)
      assert.equal("failed", rows[2].status)
      assert.equal("CPS0005", rows[2].code)
      assert.is_nil(rows[2].output) -- JSON null
    end)

    it("sends a given x-request-id", function()
      local info = assert(client:sync_command("echo x", { "kp000001" }, { request_id = "my-trace-1" }))
      assert.equal("my-trace-1", info.request_id)
      assert.equal("my-trace-1", emu:requests().requests[1].headers["x-request-id"])
    end)
  end)

  describe("limits, checked before anything is sent", function()
    local ids33 = {}
    for i = 1, 101 do ids33[i] = ("kp%06d"):format(i) end
    local function first(n) local t = {} for i = 1, n do t[i] = ids33[i] end return t end

    local cases = {
      { "command empty", function() return client:sync_command("", { "kp000001" }) end, "command" },
      { "command over 1,024 bytes", function() return client:sync_command(("x"):rep(1025), { "kp000001" }) end,
        "command", 1024 },
      { "command with a newline", function() return client:async_command("ls\nreboot", { "kp000001" }) end, "command" },
      { "command not a string", function() return client:sync_command(42, { "kp000001" }) end, "command" },
      { "33 ids for sync", function() return client:sync_command("ls", first(33)) end, "instance_ids", 32 },
      { "101 ids for async", function() return client:async_command("ls", first(101)) end, "instance_ids", 100 },
      { "no ids", function() return client:sync_command("ls", {}) end, "instance_ids" },
      { "id over 32 chars", function() return client:sync_command("ls", { ("a"):rep(33) }) end, "instance_ids[1]", 32 },
      { "duplicate ids", function() return client:sync_command("ls", { "kp000001", "kp000001" }) end, "instance_ids[2]" },
      { "id not a string", function() return client:sync_command("ls", { 7 }) end, "instance_ids[1]" },
      { "negative timeout", function() return client:sync_command("ls", { "kp000001" }, { timeout = -1 }) end, "timeout" },
      { "NaN timeout", function() return client:sync_command("ls", { "kp000001" }, { timeout = 0 / 0 }) end, "timeout" },
      { "task id with a slash", function() return client:query_task("../etc") end, "task_id" },
      { "job id empty", function() return client:job("") end, "job_id" },
      { "21 request ids", function()
          local r = {} for i = 1, 21 do r[i] = "r" .. i end
          return client:jobs{ request_ids = r } end, "request_ids", 20 },
      { "ListJobs limit 0", function() return client:jobs{ request_id = "r", limit = 0 } end, "limit", 100 },
      { "ListJobs offset -1", function() return client:jobs{ request_id = "r", offset = -1 } end, "offset" },
      { "restart: no phones", function() return client:restart_phones({}) end, "phones" },
      { "restart: a property that is not a table or string", function()
          return client:restart_phones({ { phone_id = "ph000001", property = 5 } }) end, "phones[1].property" },
      { "restart: over max_restart", function()
          local p = {} for i = 1, 101 do p[i] = ("ph%06d"):format(i) end
          return client:restart_phones(p) end, "phones", 100 },
    }
    for _, c in ipairs(cases) do
      it("refuses " .. c[1] .. ", naming field " .. c[3], function()
        local ok, msg, err = c[2]()
        assert.equal(tostring(err), msg)
        assert.is_nil(ok)
        assert.equal("validation", err.kind)
        assert.equal(c[3], err.field)
        if c[4] then assert.equal(c[4], err.limit) end
        assert.matches(c[3]:gsub("[%[%]%.]", "%%%0"), tostring(err))
        assert.equal(0, sent())
      end)
    end

    local app = { object_name = "com.example.app", file_name = "app.apk", object_version = "1.0.0",
                  object_size = 120, install_package_url = "https://obs.example.com/app.apk?Signature=s3cr3t" }
    local function with(k, v) local t = {} for a, b in pairs(app) do t[a] = b end t[k] = v return t end
    local install_cases = {
      { "object_name", with("object_name", ("n"):rep(101)), 100 },
      { "object_name", with("object_name", nil) },
      { "file_name", with("file_name", ("f"):rep(101)), 100 },
      { "object_version", with("object_version", ("1"):rep(101)), 100 },
      { "biz_type", with("biz_type", ("b"):rep(65)), 64 },
      { "content_type", with("content_type", ("c"):rep(65)), 64 },
      { "content_md5", with("content_md5", ("m"):rep(201)), 200 },
      { "install_package_url", with("install_package_url", "https://x/" .. ("u"):rep(2000)), 2000 },
      { "install_package_url", with("install_package_url", "ftp://x/app.apk") },
      { "fast_install", with("fast_install", 2) },
      { "object_size", with("object_size", "12MB") },
      { "object_size", with("object_size", -1) },
    }
    for _, c in ipairs(install_cases) do
      it("refuses an install with a bad " .. c[1], function()
        local ok, _, err = client:install_app(c[2], { "kp000001" })
        assert.is_nil(ok)
        assert.equal(c[1], err.field)
        if c[3] then assert.equal(c[3], err.limit) end
        assert.equal(0, sent())
      end)
    end
    it("refuses an install on 101 instances", function()
      local _, _, err = client:install_app(app, first(101))
      assert.equal("instance_id_list", err.field)
      assert.equal(100, err.limit)
    end)
  end)

  describe("async_command and tasks", function()
    it("returns a task mapping each job to its instance, and waits for it", function()
      local task = assert(client:async_command("echo hello", { "kp000001", "kp000002", "ghost002" }))
      assert.is_string(task.id)
      local n = 0
      for job_id, id in pairs(task.jobs) do
        n = n + 1
        assert.is_string(job_id)
        assert.matches("^[kg]", id)
      end
      assert.equal(3, n)
      local rows = assert(task:wait{ timeout = 10 })
      assert.equal(3, #rows)
      assert.same({ "ok", "hello" }, { rows[1].status, rows[1].output })
      assert.equal(task.id, rows[1].task_id)
      assert.equal("failed", rows[3].status)
      assert.equal("CPS0005", rows[3].code)
    end)

    it("polls without blocking", function()
      emu:config{ durations = { default = 0.5 } }
      local task = assert(client:async_command("echo later", { "kp000004" }))
      local t0 = koophone.now()
      local done, rows = task:poll()
      assert.is_false(done)
      assert.equal("running", rows[1].status)
      assert.is_true(koophone.now() - t0 < 0.1)
      repeat done, rows = task:poll() until done or koophone.now() - t0 > 10
      assert.equal("ok", rows[1].status)
      emu:config{ durations = { default = 0.2 } }
    end)

    it("marks jobs still running at the timeout as 'timeout', and returns every row", function()
      local task = assert(client:async_command("sleep 5", { "kp000005", "kp000006" }))
      local rows, _, err = task:wait{ timeout = 0.3 }
      assert.is_nil(rows)
      assert.equal("timeout", err.kind)
      assert.equal(2, #err.rows)
      assert.equal("timeout", err.rows[1].status)
    end)

    it("sees a job done soon after it ends, without hammering the API", function()
      local task = assert(client:async_command("sleep 2", { "kp000007" }))
      local rows = assert(task:wait{ timeout = 10, interval = 0.2, max_interval = 5 })
      -- queries at most every 0.2 s, then every 10 % of the time so far:
      -- seen done within 10 % of the job's 2 s plus the 0.2 s interval
      local lag = rows[1].elapsed - 2
      assert.is_true(lag <= 0.1 * 2 + 0.2 + 0.15, "lag " .. lag)
      assert.is_true(task.polls <= 12, "polls: " .. task.polls)
      assert.equal(task.polls, emu:requests{ endpoint = "task" }.count)
    end)

    it("re-attaches to an existing task by id", function()
      local task = assert(client:async_command("echo again", { "kp000008" }))
      local again = assert(client:task(task.id, { jobs = task.jobs, ids = { "kp000008" } }))
      local rows = assert(again:wait{ timeout = 5 })
      assert.equal("kp000008", rows[1].id)
      assert.equal("again", rows[1].output)
      local raw = assert(client:query_task(task.id))
      assert.equal(2, raw[1].vendor_status)
    end)

    it("follows a task known only by its id: rows keyed by job id", function()
      local started = assert(client:async_command("echo by-id", { "kp000021", "kp000022" }))
      local task = assert(client:task(started.id))
      local rows = assert(task:wait{ timeout = 5 })
      assert.equal(2, #rows)
      for _, row in ipairs(rows) do
        assert.equal("ok", row.status)
        assert.equal(row.id, row.job_id)
        assert.equal(started.jobs[row.job_id] ~= nil, true)
      end
    end)

    it("reports a task that cannot be read as an error on every row", function()
      local task = assert(client:task("doesnotexist", { jobs = { j1 = "kp000001" }, ids = { "kp000001" } }))
      local rows, _, err = task:wait{ timeout = 5, interval = 0.01 }
      assert.is_nil(rows)
      assert.equal("http", err.kind)
      assert.equal(400, err.http_status)
      assert.equal("error", err.rows[1].status)
    end)
  end)

  describe("install_app", function()
    it("sends the page's example (numbers for fast_install and object_size) and follows the ZGCA task", function()
      local task = assert(client:install_app({
        fast_install = "1", object_name = "com.tencent.mm", file_name = "meituan.apk", object_version = "8.0.58",
        object_size = "120", biz_type = "apk", content_type = "application/octet-stream", content_md5 = "fghfg",
        install_package_url = "https://obs.example.com/app.apk?AccessKeyId=AK&Signature=SIG",
      }, { "XvH39QVW", "Vpp8rC4Y" }))
      assert.matches("^ZGCA", task.id)
      local rows = assert(task:wait{ timeout = 10 })
      assert.same({ "ok", "ok" }, { rows[1].status, rows[2].status })
      assert.equal(1, emu:executions().executions.XvH39QVW["install com.tencent.mm"])
    end)
  end)

  describe("CPH: restart_phones, job, jobs", function()
    it("restarts phones with properties (sent as JSON strings) and follows them with ListJobs", function()
      local task = assert(client:restart_phones({
        { phone_id = "ph000001", property = { phone_num = "13666666666", wifi_name = "test_wifi" } },
        "ph000002", "no-such-phone",
      }, { image_id = "1564567b8bab40f34711234cb80d8574" }))
      local rows = assert(task:wait{ timeout = 10 })
      assert.same({ "ok", "ok", "failed" }, { rows[1].status, rows[2].status, rows[3].status })
      assert.equal("CPS.0004", rows[3].code)
      assert.equal("ph000001", rows[1].phone_id)
      local jobs = assert(client:jobs{ request_id = task.id })
      assert.equal(2, #jobs)
      local one = assert(client:job(rows[1].job_id))
      assert.equal("ph000001", one.phone_id)
      assert.equal("ok", one.status)
      -- followed with ListJobs, never one ShowJob per phone
      assert.equal(0, emu:requests{ endpoint = "job" }.count - 1)
    end)

    it("pages ListJobs for the caller", function()
      local phones = {}
      for i = 1, 30 do phones[i] = ("ph%06d"):format(100 + i) end
      local task = assert(client:restart_phones(phones))
      local jobs = assert(client:jobs{ request_id = task.id, limit = 7 })
      assert.equal(30, #jobs)
      assert.equal(5, emu:requests{ endpoint = "jobs" }.count)
    end)

    it("needs a CPH endpoint and a project id", function()
      local c = assert(koophone.new{ token = emu.token, endpoint = emu.url, cph_endpoint = false, project_id = false })
      local _, _, err = c:restart_phones({ "ph000001" })
      assert.equal("validation", err.kind)
    end)
  end)

  describe("errors", function()
    it("are structured: kind, HTTP status, vendor code, message, request id", function()
      local bad = assert(koophone.new{ token = "wrong-token-value", endpoint = emu.url })
      local rows, _, err = bad:sync_command("ls", { "kp000001" }, { request_id = "trace-401" })
      assert.is_nil(rows)
      assert.equal("http", err.kind)
      assert.equal(401, err.http_status)
      assert.equal("KOOPHONE.API.0401", err.code)
      assert.equal("trace-401", err.request_id)
      assert.is_false(err.retryable)
    end)

    it("never show the token, and scrub signed URLs' query strings", function()
      local bad = assert(koophone.new{ token = "super-secret-token", endpoint = emu.url })
      local _, _, err = bad:sync_command("ls", { "kp000001" })
      assert.not_matches("super%-secret%-token", tostring(err))
      assert.not_matches("super%-secret%-token", tostring(bad.auth))
      local log = emu:requests().requests[1]
      assert.not_equal("super-secret-token", log.headers["x-auth-token"])
      local errors = require "koophone.errors"
      assert.equal("see https://obs.example.com/a.apk?<redacted> now",
        errors.scrub("see https://obs.example.com/a.apk?AccessKeyId=AK&Signature=S now"))
    end)

    it("report a connection failure as kind 'connect'", function()
      local c = assert(koophone.new{ token = "t", endpoint = "http://127.0.0.1:1", retries = 1, retry_base = 0.01 })
      local _, _, err = c:sync_command("ls", { "kp000001" })
      assert.equal("connect", err.kind)
      assert.equal(2, err.attempts) -- nothing was sent: safe to retry a POST
      assert.is_string(err.request_id)
    end)
  end)
end)
