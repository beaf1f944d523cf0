-- The whole fleet (koophone.fleet): reboot, reset, backup, status, the
-- instance list, installed apps; CPH phone detail, phone list, batch reset;
-- and the same operations in koophone.batch. Every call against the
-- emulator, its paging, and its bad input (field and limit named, nothing sent).
-- Run: lua5.4 /usr/bin/busted spec/fleet_spec.lua
local koophone = require "koophone"
local batch = require "koophone.batch"
local emulator = require "spec.support.emulator"

local APP = { object_name = "com.example.app", file_name = "example.apk", object_version = "1.0",
              object_size = 12, install_package_url = "https://obs.example.com/example.apk" }

local function ids(n, prefix, from)
  local t = {}
  for i = from or 0, (from or 0) + n - 1 do t[#t + 1] = ("%s%06d"):format(prefix or "kp", i) end
  return t
end

describe("koophone fleet", function()
  local emu, client
  setup(function()
    emu = emulator.start { fleet = 450, scenario = {
      durations = { default = 0.2, reboot = 0.4, install = 0.2, restart = 0.2 },
      overrides = { ph000004 = { match = "^restart$", status = -1 } },
    } }
    client = assert(koophone.new { token = emu.token, endpoint = emu.url, cph_endpoint = emu.url,
                                   project_id = emu.project_id, poll_interval = 0.05, retries = 0 })
  end)
  teardown(function()
    client:close()
    emu:stop()
  end)
  before_each(function() emu:reset() end)

  local function sent(endpoint) return emu:requests { endpoint = endpoint }.count end

  -- a call refused before sending: the field, the limit when there is one
  local function refused(field, limit, v, msg, err)
    assert.is_nil(v, field)
    assert.equal("validation", err.kind)
    assert.equal(field, err.field)
    assert.equal(tostring(err), msg)
    if limit then assert.equal(limit, err.limit) end
    assert.equal(0, emu:requests().count, field .. ": something was sent")
  end

  describe("reboot", function()
    it("takes the order for every id; the instances start, then run again", function()
      local rows = assert(client:reboot { "kp000001", "kp000002" })
      assert.equal(2, #rows)
      assert.same({ "kp000001", "kp000001", "ok" }, { rows[1].id, rows[1].instance_id, rows[1].status })
      assert.is_string(rows.request_id)
      local st = assert(client:instance_status { "kp000001", "kp000003" })
      assert.same({ "starting", 4 }, { st[1].state, st[1].vendor_status })
      assert.same({ "running", 2 }, { st[2].state, st[2].vendor_status })
      assert.equal(1, emu:executions { instance = "kp000001" }.executions.kp000001.reboot)
    end)

    it("fails as a whole when the vendor refuses an unknown id (it has no per-id result)", function()
      local v, msg, err = client:reboot { "kp000001", "ghost001" }
      assert.is_nil(v)
      assert.equal("KOOPHONE.API.1001", err.code)
      assert.matches("ghost001", msg)
    end)

    it("refuses bad ids before sending: empty, over max_ids, too long, duplicated", function()
      refused("instance_ids", 100, client:reboot {})
      refused("instance_ids", 100, client:reboot(ids(101)))
      refused("instance_ids[1]", 32, client:reboot { string.rep("k", 33) })
      refused("instance_ids[2]", nil, client:reboot { "kp000001", "kp000001" })
      refused("instance_ids", nil, client:reboot("kp000001"))
      local small = assert(koophone.new { token = emu.token, endpoint = emu.url, max_ids = 2 })
      refused("instance_ids", 2, small:reboot(ids(3)))
      small:close()
      refused("max_ids", 1000, koophone.new { token = "t", max_ids = 1001 })
    end)
  end)

  describe("reset and backup", function()
    it("reset is a task; the instance loses its installed apps", function()
      assert(assert(client:install_app(APP, { "kp000010" })):wait { timeout = 10 })
      local before = assert(client:apps("kp000010"))
      assert.equal(9, #before)
      local task = assert(client:reset { "kp000010", "ghost001" })
      assert.equal("reset", task.kind)
      local rows = assert(task:wait { timeout = 10 })
      assert.same({ "kp000010", "ok" }, { rows[1].id, rows[1].status })
      assert.same({ "ghost001", "failed", "CPS0005" }, { rows[2].id, rows[2].status, rows[2].code })
      assert.equal(8, #assert(client:apps("kp000010")))
    end)

    it("backup is a task; the instance list then shows backup_status 2", function()
      local rows = assert(assert(client:backup { "kp000020" }):wait { timeout = 10 })
      assert.equal("ok", rows[1].status)
      local list = assert(client:instances { instance_id = "kp000020" })
      assert.equal(1, #list)
      assert.equal(2, list[1].backup_status)
    end)

    it("refuse bad input before sending", function()
      refused("instance_ids", 100, client:reset(ids(101)))
      refused("instance_ids", 100, client:backup {})
      refused("timeout", nil, client:backup({ "kp000001" }, { timeout = -1 }))
      local _, msg = client:reset({ "kp000001" }, { timout = 1 })
      assert.matches("did you mean 'timeout'", msg)
    end)
  end)

  describe("instance_status", function()
    it("names each state, unknown ids included", function()
      local rows = assert(client:instance_status { "kp000001", "ghost001", "a44uhlf7" })
      assert.same({ "ok", "running", 2, "running" },
        { rows[1].status, rows[1].state, rows[1].vendor_status, rows[1].output })
      assert.same({ "ok", "unknown", 0 }, { rows[2].status, rows[2].state, rows[2].vendor_status })
      assert.equal("running", rows[3].state)
    end)

    it("turns an answer without the id into an error row", function()
      emu:add_fault { endpoint = "status", kind = "wrong_types", count = 1 } -- the list becomes an object
      local rows = assert(client:instance_status { "kp000001" })
      assert.same({ "kp000001", "error", "protocol" }, { rows[1].id, rows[1].status, rows[1].kind })
      emu:add_fault { endpoint = "status", kind = "missing", count = 1 }
      local v, _, err = client:instance_status { "kp000001" }
      assert.is_nil(v)
      assert.equal("decode", err.kind)
    end)

    it("refuses bad ids before sending", function()
      refused("instance_ids", 100, client:instance_status(ids(101)))
    end)
  end)

  describe("instances", function()
    it("reads every page, with x-request-id as a query parameter", function()
      local list = assert(client:instances { page_size = 100 })
      -- 450 numbered + the 4 ids of the pages' examples + ph000004 (named in overrides)
      assert.equal(455, #list)
      assert.equal(455, list.total)
      assert.same({ "kp000000", "kp000000", "running", 2, "ph000000" },
        { list[1].id, list[1].instance_id, list[1].state, list[1].vendor_status, list[1].phone_id })
      assert.equal("ph000004", list[455].instance_id) -- the other ids come after the numbered ones, sorted
      local reqs = emu:requests { endpoint = "instances" }
      assert.equal(5, reqs.count)
      for i, r in ipairs(reqs.requests) do
        assert.matches("[?&]x%-request%-id=[%w%-]+", r.path)
        assert.matches("page_no=" .. i .. "&", r.path)
        assert.equal(200, r.status)
      end
    end)

    it("filters by name, time, order (the API) and status (here)", function()
      local list = assert(client:instances { instance_name = "kp00012", order = "desc" })
      assert.equal(10, #list)
      assert.equal("kp000129", list[1].instance_id)
      list = assert(client:instances { query_start_time = "2025-01-01 00:00:10",
                                       query_end_time = "2025-01-01 00:00:12" })
      assert.same({ "kp000010", "kp000011", "kp000012" }, { list[1].id, list[2].id, list[3].id })
      assert(client:reboot { "kp000007", "kp000300" })
      list = assert(client:instances { status = "starting", page_size = 200 })
      assert.same({ "kp000007", "kp000300" }, { list[1].id, list[2].id })
      assert.equal(2, #list)
      assert.equal(455, list.total)
      assert.equal(2, #assert(client:instances { status = 4, page_size = 200 }))
    end)

    it("each_instance reads lazily: a loop that stops early costs one page", function()
      local n = 0
      for inst in assert(client:each_instance { page_size = 50 }) do
        n = n + 1
        assert.equal(("kp%06d"):format(n - 1), inst.instance_id)
        if n == 10 then break end
      end
      assert.equal(1, sent("instances"))
      local total = 0
      for inst, msg in assert(client:each_instance { page_size = 200 }) do
        assert.truthy(inst, msg)
        total = total + 1
      end
      assert.equal(455, total)
    end)

    it("each_instance says when a page fails (false, message, err), then ends", function()
      emu:add_fault { endpoint = "instances", kind = "500", every = 2 }
      local got, failures, last_err = 0, 0, nil
      for inst, msg, err in assert(client:each_instance { page_size = 100 }) do
        if inst then got = got + 1 else failures, last_err = failures + 1, err; assert.matches("HTTP 500", msg) end
      end
      assert.equal(100, got)
      assert.equal(1, failures)
      assert.equal(500, last_err.http_status)
      local v, msg = client:instances { page_size = 100 }
      assert.is_nil(v)
      assert.matches("HTTP 500", msg)
    end)

    it("refuses a bad filter before sending", function()
      refused("page_size", 200, client:instances { page_size = 201 })
      refused("order", nil, client:instances { order = "up" })
      refused("status", nil, client:instances { status = "asleep" })
      refused("query_start_time", nil, client:instances { query_start_time = "2025-01-01T00:00:00Z" })
      refused("pool_scene_tag", nil, client:instances { pool_scene_tag = "PHONE" })
      refused("instance_name", 128, client:instances { instance_name = string.rep("x", 129) })
      refused("request_id", nil, client:instances { request_id = "a b" })
      refused("statuss", nil, client:instances { statuss = "running" })
      refused("filter", nil, client:each_instance("running"))
    end)
  end)

  describe("apps", function()
    it("reads every page; an install that ended shows, at its version", function()
      local apps = assert(client:apps("kp000001", { page_size = 3 }))
      assert.equal(8, #apps)
      assert.equal(8, apps.total)
      assert.equal(3, sent("apps"))
      assert.equal("com.android.settings", apps[1].app_pkg)
      assert(assert(client:install_app(APP, { "kp000001" })):wait { timeout = 10 })
      local third = assert(client:apps("kp000001", { app_type = "third_party" }))
      assert.same({ { app_pkg = "com.example.app", app_version = "1.0", app_name = "example" } },
        { { app_pkg = third[1].app_pkg, app_version = third[1].app_version, app_name = third[1].app_name } })
      assert.equal(8, #assert(client:apps("kp000001", { app_type = 1 })))
    end)

    it("fails for an instance the vendor does not know", function()
      local v, _, err = client:apps("ghost001")
      assert.is_nil(v)
      assert.equal("KOOPHONE.API.1001", err.code)
    end)

    it("refuses bad input before sending", function()
      refused("instance_id", 32, client:apps(string.rep("k", 33)))
      refused("instance_id", nil, client:apps("kp/1"))
      refused("page_size", 200, client:apps("kp000001", { page_size = 0 }))
      refused("app_type", nil, client:apps("kp000001", { app_type = 3 }))
      refused("apptype", nil, client:apps("kp000001", { apptype = 1 }))
    end)
  end)

  describe("CPH phones", function()
    it("phone: the detail with the status named; a failed restart is restart_failed (-6)", function()
      local p = assert(client:phone("ph000001"))
      assert.same({ "ph000001", "ph000001", 2, "running" }, { p.id, p.phone_id, p.vendor_status, p.state })
      assert.is_string(p.imei)
      local rows = assert(assert(client:restart_phones { "ph000004", "ph000005" }):wait { timeout = 10 })
      assert.same({ "failed", "ok" }, { rows[1].status, rows[2].status })
      assert.same({ -6, "restart_failed" }, { client:phone("ph000004").vendor_status, client:phone("ph000004").state })
      assert.equal("running", client:phone("ph000005").state)
    end)

    it("phone: an unknown phone is the vendor's 404", function()
      local v, _, err = client:phone("ph999999")
      assert.is_nil(v)
      assert.same({ 404, "CPS.0005" }, { err.http_status, err.code })
    end)

    it("phones: every page, the vendor's filters", function()
      local list = assert(client:phones { limit = 200 })
      assert.equal(453, #list)
      assert.equal(453, list.total)
      assert.equal(3, sent("phones"))
      assert.same({ "ph000000", "running" }, { list[1].id, list[1].state })
      list = assert(client:phones { offset = 440, limit = 5 })
      assert.equal(13, #list)
      assert.equal("ph000440", list[1].id)
      assert.equal(2, #assert(client:phones { phone_name = "ph00044", limit = 5, offset = 8 }))
      assert(assert(client:restart_phones { "ph000004" }):wait { timeout = 10 })
      list = assert(client:phones { status = "restart_failed" })
      assert.same({ "ph000004" }, { list[1].id })
      assert.equal(1, #list)
      local n = 0
      for ph in assert(client:each_phone { limit = 10 }) do
        n = n + 1
        if n == 5 then assert.equal("ph000004", ph.id) break end
      end
    end)

    it("reset_phones: a task followed with ListJobs; the phone resets, then runs", function()
      local task = assert(client:reset_phones({ "ph000006", { phone_id = "ph000007", property = { a = 1 } }, "phXX" }))
      assert.equal("phone_reset", task.kind)
      assert.equal("resetting", client:phone("ph000006").state)
      local rows = assert(task:wait { timeout = 10 })
      assert.same({ "ok", "ok", "failed" }, { rows[1].status, rows[2].status, rows[3].status })
      assert.equal("CPS.0004", rows[3].code)
      assert.equal("ph000006", rows[1].phone_id)
      assert.equal("running", client:phone("ph000006").state)
      assert.truthy(sent("jobs") >= 1)
      assert.equal(0, sent("job"))
      assert.equal(1, emu:executions { instance = "ph000006" }.executions.ph000006.reset)
    end)

    it("refuse bad input before sending", function()
      refused("phone_id", 64, client:phone(string.rep("p", 65)))
      refused("phone_id", nil, client:phone("ph 1"))
      refused("limit", 200, client:phones { limit = 201 })
      refused("offset", nil, client:phones { offset = -1 })
      refused("status", nil, client:phones { status = 5 })
      refused("type", 1, client:phones { type = 2 })
      refused("phones", 100, client:reset_phones(ids(101, "ph")))
      refused("phones[1].propety", nil, client:reset_phones { { phone_id = "ph000001", propety = {} } })
      refused("image_id", nil, client:reset_phones({ "ph000001" }, { image_id = "a/b" }))
    end)
  end)

  describe("in koophone.batch", function()
    it("reboot and status chunk at max_ids, one row per id in order", function()
      local c = assert(koophone.new { token = emu.token, endpoint = emu.url, max_ids = 10 })
      local list = ids(25)
      local rep = assert(batch.reboot(c, list, { concurrency = 2 }))
      assert.equal(25, rep.summary.ok)
      assert.equal(3, sent("reboot"))
      rep = assert(batch.status(c, list))
      assert.equal(3, sent("status"))
      assert.equal(25, rep.summary.ok)
      assert.same({ "kp000024", "starting" }, { rep.rows[25].id, rep.rows[25].state })
      -- the vendor refuses a reboot with an unknown id as a whole: its chunk's rows are errors
      rep = assert(batch.reboot(c, { "kp000001", "ghost001", "kp000003" }, { chunk = 2 }))
      assert.same({ "error", "error", "ok" }, { rep.rows[1].status, rep.rows[2].status, rep.rows[3].status })
      assert.equal("KOOPHONE.API.1001", rep.rows[1].code)
      local v, _, err = batch.status(c, list, { chunk = 11 })
      assert.is_nil(v)
      assert.same({ "chunk", 10 }, { err.field, err.limit })
      c:close()
    end)

    it("reset and backup follow their tasks, with a journal", function()
      local path = os.tmpname()
      local rep = assert(batch.reset(client, { "kp000001", "kp000002", "ghost001" }, { journal = path, chunk = 2 }))
      assert.same({ "ok", "ok", "failed" }, { rep.rows[1].status, rep.rows[2].status, rep.rows[3].status })
      assert.equal(2, sent("reset"))
      local f = assert(io.open(path))
      local text = f:read("*a")
      f:close()
      os.remove(path)
      assert.matches('"kind":"reset"', text)
      assert.matches('"type":"end"', text)
      rep = assert(batch.backup(client, ids(150)))
      assert.equal(150, rep.summary.ok)
      assert.equal(2, sent("backup"))
    end)

    it("resume follows reset and phone_reset tasks again from the journal, sending nothing twice", function()
      for _, case in ipairs { { batch.reset, "kp000030", "reset" }, { batch.reset_phones, "ph000030", "phone-reset" } } do
        emu:reset()
        -- resets that outlive the batch's timeout (emu:reset() forgets this)
        emu:config { durations = { reset = 1, ["phone-reset"] = 1 } }
        local path = os.tmpname()
        local rep = assert(case[1](client, { case[2] }, { journal = path, timeout = 0.4 }))
        assert.equal("timeout", rep.rows[1].status)
        rep = assert(batch.resume(client, path))
        os.remove(path)
        assert.same({ case[2], "ok" }, { rep.rows[1].id, rep.rows[1].status })
        assert.equal(1, sent(case[3]))
      end
    end)

    it("reset_phones, phone_status and apps: rows per id, unknown ids as rows", function()
      local rep = assert(batch.reset_phones(client, { "ph000001", "phXX" }))
      assert.same({ "ok", "failed" }, { rep.rows[1].status, rep.rows[2].status })
      rep = assert(batch.phone_status(client, { "ph000001", "ph999999" }, { concurrency = 2 }))
      assert.same({ "ok", "running", 2 }, { rep.rows[1].status, rep.rows[1].state, rep.rows[1].vendor_status })
      assert.same({ "error", 404 }, { rep.rows[2].status, rep.rows[2].http_status })
      rep = assert(batch.apps(client, { "kp000001", "kp000002", "ghost001" }))
      assert.equal(8, #rep.rows[1].apps)
      assert.equal("8 apps", rep.rows[2].output)
      assert.equal("error", rep.rows[3].status)
      assert.equal(3, sent("apps"))
    end)

    it("refuse bad input before sending", function()
      refused("ids[2]", 32, batch.reboot(client, { "kp000001", string.rep("k", 33) }))
      refused("ids", nil, batch.status(client, {}))
      refused("chunk", 1, batch.apps(client, { "kp000001" }, { chunk = 2 }))
      refused("phones[1].propety", nil, batch.reset_phones(client, { { phone_id = "ph1", propety = {} } }))
      refused("concurency", nil, batch.backup(client, { "kp000001" }, { concurency = 2 }))
    end)
  end)
end)
