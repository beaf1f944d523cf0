-- A task query's rows built straight from the reply's bytes
-- (src/job_rows.c; KooPhone task queries and CPH ListJobs pages): only the
-- jobs that ended since the last query become
-- rows, running jobs leave nothing behind, and a task ends exactly as it
-- does on the reference path (cjson's decode, then Task:_apply) — on
-- generated replies, and against the emulator, where a batch taking the
-- direct path and one kept on the reference path return the same rows.
local koophone = require "koophone"
local batch = require "koophone.batch"
local core = require "koophone.core"
local Task = require "koophone.task"
local replies = require "bench.task_replies"
local emulator = require "spec.support.emulator"

local CLIENT = { poll_interval = 0.5, poll_max_interval = 10, poll_ratio = 0.1 }

local function reply(items)
  return '{"error_code":"0","error_msg":"ok","data":{"jobs":[' .. table.concat(items, ",") .. "]}}"
end

local function job(id, status, msg)
  return ('{"job_id":"%s","status":%s,"error_code":"","error_msg":"","execute_msg":%s}'):format(
    id, status, msg and ('"' .. msg .. '"') or "null")
end

-- a task of three instances, jobs j1..j3
local function new_task()
  return Task.new(CLIENT, { kind = "install", id = "task-1", request_id = "req-1", ids = { "a", "b", "c" },
                            jobs = { j1 = "a", j2 = "b", j3 = "c" } })
end

local function follow(t)
  return { jobs = t.jobs, job_of = t.job_of, not_started = t.not_started, id_field = t.id_field }
end

describe("task query rows from the reply's bytes", function()
  it("builds rows for the jobs that ended, and nothing for those still running", function()
    local t = new_task()
    local body, list, changes = core.task_reply(reply { job("j1", 2, "Success"), job("j2", 1), job("j3", -1) }, follow(t))
    assert.equal(body.data.jobs, list)
    assert.equal("0", body.error_code)
    assert.is_nil(changes)
    assert.equal(2, #list)
    assert.same({ id = "a", instance_id = "a", status = "ok", vendor_status = 2, output = "Success", job_id = "j1" }, list[1])
    assert.same({ id = "c", instance_id = "c", status = "failed", vendor_status = -1, job_id = "j3" }, list[2])
    assert.equal(2, t:_apply_rows(list, changes))
    assert.same({ "ok", "running", "failed" }, { t.rows.a.status, t:results()[2].status, t.rows.c.status })
    assert.same({ "task-1", "req-1" }, { t.rows.a.task_id, t.rows.a.request_id })
    assert.equal(1, t.running)
    -- a job that ended is not built again by the next reply
    list = select(2, core.task_reply(reply { job("j1", 2, "Success"), job("j2", 2), job("j3", -1) }, follow(t)))
    assert.equal(1, #list)
    assert.equal("b", list[1].id)
    t:_apply_rows(list)
    assert.is_true(t.finished)
  end)

  it("tells which running jobs have not started (status 0), and when they do", function()
    local t = new_task()
    local _, list, changes = core.task_reply(reply { job("j1", 0), job("j2", 1), job("j3", 0) }, follow(t))
    assert.same({}, list)
    assert.same({ a = true, b = false, c = true }, changes) -- once one changes, every running job says its state
    t:_apply_rows(list, changes)
    assert.equal(0, t:results()[1].vendor_status)
    _, list, changes = core.task_reply(reply { job("j1", 1), job("j2", 1), job("j3", 0) }, follow(t))
    assert.same({ a = false, b = false, c = true }, changes)
    t:_apply_rows(list, changes)
    assert.same({ 1, 1, 0 }, { t:results()[1].vendor_status, t:results()[2].vendor_status, t:results()[3].vendor_status })
  end)

  it("skips jobs the task does not follow, and counts a job listed twice once (the first answer)", function()
    local t = new_task()
    local _, list = core.task_reply(reply { job("zz", 2), job("j1", -1), job("j1", 2), '{"status":2}' }, follow(t))
    assert.equal(2, #list)
    assert.equal(1, t:_apply_rows(list))
    assert.equal("failed", t.rows.a.status)
    assert.equal(2, t.running)
  end)

  it("leaves every reply that is not plain to the reference path", function()
    local t = new_task()
    local f = follow(t)
    for _, items in ipairs {
      { job("j1", '"2"') }, { job("j1", "2.0") }, { job("j1", 4) }, { '{"job_id":"j1"}' },
      { '{"job_id":5,"status":2}' }, { '{"job_id":"j1","status":2,"execute_msg":7}' },
      { '{"job\\u005fid":"j1","status":2}' }, { "null" }, { "{}" },
    } do
      -- the items decoded as any reply's (or, for what the fast path does
      -- not decode at all, nothing: the engine hands the text to cjson)
      local body, list = core.task_reply(reply(items), f)
      assert.is_nil(list, items[1])
      if body then assert.is_table(body.data.jobs, items[1]) end
    end
    -- not JSON the fast path takes: nothing at all, the engine hands it to cjson
    assert.is_nil(core.task_reply('{"data":{"jobs":[', f))
    -- a later "data" replaces the jobs: no rows
    local body, list = core.task_reply('{"data":{"jobs":[' .. job("j1", 2) .. ']},"data":{"count":0}}', f)
    assert.same({ data = { count = 0 } }, body)
    assert.is_nil(list)
    -- ... and a later "jobs" list is the one whose rows count, as with cjson
    body, list = core.task_reply('{"data":{"jobs":[' .. job("j1", 2) .. '],"jobs":[' .. job("j2", -1) .. "]}}", f)
    assert.equal(body.data.jobs, list)
    assert.same({ "b" }, { list[1].id, list[2] })
  end)

  it("checks its arguments", function()
    assert.has_error(function() core.task_reply(nil, {}) end)
    assert.has_error(function() core.task_reply("{}", "x") end)
    -- a table without the task's tables: the fast path is not taken
    assert.is_nil(core.task_reply(reply { job("j1", 2) }, {}))
  end)

  it("ends the task as the reference path does on 3,000 generated replies", function()
    local seed = tonumber(os.getenv("KOOPHONE_ROWS_SEED") or "") or os.time()
    local gen = replies.generator(seed)
    local seen = { rows = 0, items = 0, gave_up = 0 }
    for _ = 1, 3000 do
      local ok, how = pcall(replies.compare, gen())
      assert(ok, ("seed %d: %s"):format(seed, tostring(how)))
      seen[how] = seen[how] + 1
    end
    assert.is_true(seen.rows > 1000 and seen.items > 200 and seen.gave_up > 100,
                   ("seed %d: rows %d, items %d, gave up %d"):format(seed, seen.rows, seen.items, seen.gave_up))
  end)
end)

describe("a batch against the emulator: the same rows with and without the direct path", function()
  local emu
  setup(function()
    emu = emulator.start { scenario = {
      durations = { default = 0.4 }, vendor = "sdk", -- install jobs start at 0 (not run yet)
      overrides = { kp000003 = { status = -1, error_code = "CPS.0191", error_msg = "Run command failed." } },
    } }
  end)
  teardown(function() emu:stop() end)

  -- runs fn(client) with Task:_apply (the reference path) counted, or,
  -- with reference = true, with the direct path turned off
  local function run(reference, fn)
    local apply, query = Task._apply, Task._query
    local general = 0
    Task._apply = function(...) general = general + 1 return apply(...) end
    if reference then
      Task._query = function(self, ...) self.follow = false return query(self, ...) end
    end
    local client = assert(koophone.new { token = emu.token, endpoint = emu.url, cph_endpoint = emu.url,
                                         project_id = emu.project_id, max_restart = 200 })
    local ok, a, b = pcall(fn, client)
    Task._apply, Task._query = apply, query
    client:close()
    assert(ok, a)
    return a, b, general
  end

  local function strip(list)
    local out = {}
    for i, row in ipairs(list) do
      local copy = {}
      for k, v in pairs(row) do copy[k] = v end
      -- what differs between any two runs
      copy.elapsed, copy.job_id, copy.task_id, copy.request_id, copy.polls = nil, nil, nil, nil, nil
      out[i] = copy
    end
    return out
  end

  it("installs on 250 instances through the direct path, with the rows of the reference path", function()
    local ids = {}
    for i = 1, 250 do ids[i] = ("kp%06d"):format(i) end
    local app = { object_name = "com.example.app", file_name = "app.apk", object_version = "1", object_size = 1,
                  install_package_url = "https://obs.example.com/app.apk" }
    local direct, _, general = run(false, function(c) return assert(batch.install(c, app, ids, { concurrency = 4 })) end)
    assert.equal(0, general) -- every query's reply became rows in C
    local ref, _, general_ref = run(true, function(c) return assert(batch.install(c, app, ids, { concurrency = 4 })) end)
    assert.is_true(general_ref > 0)
    assert.same(strip(ref.rows), strip(direct.rows))
    assert.equal(249, direct.summary.ok)
    assert.same({ "failed", "CPS.0191" }, { direct.rows[3].status, direct.rows[3].code })
    for _, row in ipairs(direct.rows) do
      assert.is_string(row.task_id)
      assert.is_number(row.elapsed)
      assert.is_true(row.polls >= 1)
    end
  end)

  it("restarts 450 phones through the direct path, ListJobs page by page, with the rows of the reference path", function()
    -- 150 phones a request: two pages (of 100) a query
    local phones = {}
    for i = 1, 450 do phones[i] = ("ph%06d"):format(i) end
    phones[7] = "not-a-phone" -- refused at submit: a row of its own, no job
    local function restart(c) return assert(batch.restart(c, phones, { concurrency = 3, chunk = 150 })) end
    local direct, _, general = run(false, restart)
    assert.equal(0, general)
    local ref, _, general_ref = run(true, restart)
    assert.is_true(general_ref > 0)
    assert.same(strip(ref.rows), strip(direct.rows))
    assert.equal(449, direct.summary.ok)
    assert.same({ "failed", "CPS.0004" }, { direct.rows[7].status, direct.rows[7].code })
    for i, row in ipairs(direct.rows) do
      if i ~= 7 then
        assert.equal(row.id, row.phone_id)
        assert.is_string(row.request_id)
        assert.is_nil(row.task_id)
        assert.is_true(row.polls >= 1)
      end
    end
  end)

  it("follows a task attached by id: the first answer by the reference path, then the direct one", function()
    local ids = { "kp000010", "kp000011", "kp000012" }
    local rows, task, general = run(false, function(c)
      local t = assert(c:async_command("sleep 1", ids))
      local attached = assert(c:task(t.id))
      return assert(attached:wait { timeout = 20, interval = 0.2 }), attached
    end)
    assert.equal(3, #rows)
    assert.equal(1, general) -- the discovery
    assert.is_true(task.polls >= 2)
    for _, row in ipairs(rows) do assert.equal("ok", row.status) end
  end)
end)
