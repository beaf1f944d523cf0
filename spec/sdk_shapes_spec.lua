-- The client's task and install cases under both reply shapes (issue 14,
-- item 4): the seed pages' and the vendor SDK's ("vendor": "sdk": flat
-- install replies, FULFILL task ids, install jobs 0 -> 1 -> 2/3), each with
-- every error body spelling the emulator can send (error_style). The same
-- cases run for every variant; only the expectations that the shapes make
-- different (task id prefix, vendor_status of a failure) depend on it.
local koophone = require "koophone"
local batch = require "koophone.batch"
local transport = require "koophone.transport"
local emulator = require "spec.support.emulator"

local function sleep(s)
  local t = koophone.now() + s
  while koophone.now() < t do os.execute("sleep 0.01") end
end

local APP = { fast_install = "1", object_name = "com.example.shapes", file_name = "shapes.apk",
              object_version = "1.0", object_size = "12", install_package_url = "https://obs.example.com/shapes.apk" }

local VARIANTS = {}
for _, vendor in ipairs { "seed", "sdk" } do
  for _, style in ipairs { "error_code", "errorCode", "code", "nested" } do
    VARIANTS[#VARIANTS + 1] = { vendor = vendor, error_style = style }
  end
end

describe("SDK-era shapes", function()
  local emu, client
  setup(function()
    emu = emulator.start{ scenario = {
      durations = { default = 0.3, install = 1.2 },
      overrides = { kp000002 = { match = "^install ", status = -1, error_code = "KOOPHONE.API.62005",
                                 error_msg = "The app package already exists." } },
    } }
    client = assert(koophone.new{ token = emu.token, endpoint = emu.url, cph_endpoint = emu.url,
                                  project_id = emu.project_id, poll_interval = 0.05,
                                  retries = 2, retry_base = 0.01, retry_cap = 0.05 })
  end)
  teardown(function() emu:stop() end)

  for _, v in ipairs(VARIANTS) do
    local sdk = v.vendor == "sdk"
    describe(("vendor %s, error bodies %s"):format(v.vendor, v.error_style), function()
      before_each(function()
        emu:reset()
        emu:config{ vendor = v.vendor, error_style = v.error_style }
      end)

      it("async command task: 1 -> 2 / -1, every job matched to its instance", function()
        local task = assert(client:async_command("echo shapes", { "kp000001", "a44uhlf7", "ghost001" }))
        local rows = assert(task:wait{ timeout = 10 })
        assert.same({ "ok", "ok", "failed" }, { rows[1].status, rows[2].status, rows[3].status })
        assert.same({ 2, 2, -1 }, { rows[1].vendor_status, rows[2].vendor_status, rows[3].vendor_status })
        assert.equal("shapes", rows[1].output)
        assert.equal("CPS0005", rows[3].code)
      end)

      it("install task: every job reported, 0 never ends it, a failure is 'failed'", function()
        local task = assert(client:install_app(APP, { "kp000001", "kp000002", "ghost002", "kp000004" }))
        assert.matches(sdk and "^FULFILL" or "^ZGCA", task.id)
        assert.equal(4, #task:results())
        local seen0, polls = false, 0
        local t0 = koophone.now()
        local done, rows
        repeat
          done, rows = task:poll()
          for _, row in ipairs(rows) do
            if row.status == "running" and row.vendor_status == 0 then seen0 = true end
          end
          if not done then
            -- a job still 0 or 1: the task cannot be over
            local raw = client:query_task(task.id)
            if raw then polls = polls + 1 end
            sleep(0.02)
          end
        until done or koophone.now() - t0 > 10
        assert.is_true(done)
        -- the unknown id fails at once (3 in the SDK era, -1 before); the
        -- others were still 0 or 1 then, and the task went on until they ended
        assert.is_true(rows[1].elapsed >= 1.1, "ended at " .. rows[1].elapsed)
        assert.equal(sdk, seen0)
        assert.same({ "ok", "failed", "failed", "ok" }, { rows[1].status, rows[2].status, rows[3].status, rows[4].status })
        local failed = sdk and 3 or -1
        assert.same({ 2, failed, failed, 2 }, { rows[1].vendor_status, rows[2].vendor_status,
                                                rows[3].vendor_status, rows[4].vendor_status })
        assert.equal("KOOPHONE.API.62005", rows[2].code)
        assert.equal("The app package already exists.", rows[2].message)
        assert.equal("CPS0005", rows[3].code)
        assert.equal(task.id, rows[1].task_id)
        assert.is_true(polls > 0)
      end)

      it("a waiting task never reports a job that has not run yet as finished", function()
        emu:config{ durations = { install = 1.8 } }
        local task = assert(client:install_app(APP, { "kp000005", "kp000006" }))
        -- first third of the duration (0.6 s): the SDK's jobs are 0
        sleep(0.15)
        local raw = assert(client:query_task(task.id))
        assert.same(sdk and { 0, 0 } or { 1, 1 }, { raw[1].vendor_status, raw[2].vendor_status })
        assert.same({ "running", "running" }, { raw[1].status, raw[2].status })
        local done = task:poll()
        assert.is_false(done)
        local rows = assert(task:wait{ timeout = 10 })
        assert.same({ "ok", "ok" }, { rows[1].status, rows[2].status })
        assert.is_true(rows[1].elapsed >= 1.7)
        emu:config{ durations = { install = 1.2 } }
      end)

      it("batch install: every row ok, each app installed once", function()
        local ids = {}
        for i = 1, 250 do ids[i] = ("kp%06d"):format(100 + i) end
        local rep = assert(batch.install(client, APP, ids, { concurrency = 4 }))
        assert.equal(250, rep.summary.ok, tostring(rep))
        for _, row in ipairs(rep.rows) do
          assert.equal("ok", row.status)
          assert.equal(2, row.vendor_status)
          assert.matches(sdk and "^FULFILL" or "^ZGCA", row.task_id)
        end
        local ex = emu:executions()
        assert.equal(250, ex.total)
        assert.equal(1, ex.max)
      end)

      it("errors: code and message read from the body, whatever its spelling; the request id kept", function()
        local _, msg, err = client:query_task("nosuchtask", { request_id = "trace-shapes-1" })
        assert.equal(400, err.http_status)
        assert.equal("KOOPHONE.API.1000", err.code)
        assert.equal("Task not found.", err.message)
        assert.equal("trace-shapes-1", err.request_id)
        assert.matches("HTTP 400 KOOPHONE.API.1000: Task not found.", msg, 1, true)
        local bad = assert(koophone.new{ token = "wrong-token", endpoint = emu.url, cph_endpoint = emu.url,
                                         project_id = emu.project_id, retries = 0 })
        _, _, err = bad:async_command("echo x", { "kp000001" })
        assert.same({ 401, "KOOPHONE.API.0401", "Unauthorized: invalid or expired token." },
                    { err.http_status, err.code, err.message })
        _, _, err = bad:job("somejob")
        assert.same({ 401, "CPS.0001" }, { err.http_status, err.code })
        emu:add_fault{ endpoint = "sync-command", kind = "500", count = 1 }
        _, _, err = client:sync_command("echo once", { "kp000007" })
        assert.same({ 500, "KOOPHONE.API.9999", true }, { err.http_status, err.code, err.maybe_executed })
      end)

      it("429 APIGW.0308: queries retried with backoff, commands reported as not executed", function()
        local task = assert(client:async_command("echo q", { "kp000008" }))
        emu:add_fault{ endpoint = "task", kind = "429", count = 2, retry_after = 0 }
        local rows = assert(task:wait{ timeout = 10 })
        assert.equal("ok", rows[1].status)
        assert.equal(2, emu:faults().faults[1].fired)
        emu:clear_faults()
        emu:add_fault{ endpoint = "async-command", kind = "429", retry_after = 0 }
        local t, msg, err = client:async_command("echo never", { "kp000009" })
        assert.is_nil(t)
        assert.same({ 429, "APIGW.0308", true, false, 3 },
                    { err.http_status, err.code, err.retryable, err.maybe_executed, err.attempts })
        assert.matches("(not executed)", msg, 1, true)
        assert.is_nil(emu:executions().executions.kp000009)
        emu:clear_faults()
      end)
    end)
  end

  describe("the request id", function()
    before_each(function() emu:reset() end)

    it("is the vendor's X-Request-Id when the reply has one, else ours", function()
      -- batch-query echoes its x-request-id *query* parameter in the header:
      -- a reply whose id differs from the one we sent
      local tr = client.transport
      local url = emu.url .. "/v1/instances/batch-query?x-request-id=vendor-rid-1&page_no=1&page_size=1"
      local res = assert(tr:request{ method = "GET", url = url, request_id = "ours-1" })
      assert.equal("vendor-rid-1", res.request_id)
      local _, err = tr:request{ method = "GET", request_id = "ours-2",
        url = emu.url .. "/v1/instances/batch-query?x-request-id=vendor-rid-2&page_no=1&page_size=0" }
      assert.equal(400, err.http_status)
      assert.equal("vendor-rid-2", err.request_id)
      -- rows carry it too
      local rows = assert(client:sync_command("echo id", { "kp000010" }, { request_id = "trace-rows" }))
      assert.equal("trace-rows", rows[1].request_id)
      assert.equal("trace-rows", emu:requests{ endpoint = "sync-command" }.requests[1].headers["x-request-id"])
    end)
  end)

  describe("error body shapes the SDKs read", function()
    local cases = {
      { { error_code = "A.1", error_msg = "one" }, "A.1", "one" },
      { { errorCode = "A.2", errorMsg = "two" }, "A.2", "two" },
      { { code = "A.3", message = "three" }, "A.3", "three" },
      { { error = { code = "A.4", message = "four", title = "Bad" } }, "A.4", "four" },
      { { details = { { error_code = "A.5", error_msg = "five" } } }, "A.5", "five" },
      { { outer = { inner = { errorCode = "A.6", errorMsg = "six" } } }, "A.6", "six" },
      { { request_id = "r", result = {} }, nil, nil },
    }
    for i, c in ipairs(cases) do
      it("reads shape " .. i, function()
        local code, msg = transport.vendor_fields(c[1])
        assert.equal(c[2], code)
        assert.equal(c[3], msg)
      end)
    end
  end)
end)
