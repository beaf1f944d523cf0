-- bench/task_replies.lua: random task query replies (GET
-- /v1/instances/tasks/{id}, or a CPH ListJobs page) and the comparison of
-- the engine's direct path (core.task_reply: the rows of the jobs that
-- ended, built straight from the bytes, src/job_rows.c; then
-- Task:_apply_rows) with the reference path it stands in for (cjson's
-- decode, the items Client:_task_jobs or Client:_list_jobs keeps, then
-- Task:_apply). Both are applied to twin tasks in the same state; the
-- tasks must end the same. Used by spec/rows_spec.lua (a few
-- thousand cases, in CI) and fuzz/lua_fuzz.lua. Lua 5.1 - 5.4.
--
--   local replies = require "bench.task_replies"
--   local gen = replies.generator(seed)
--   local how = replies.compare(gen())  -- "rows" | "items" | "gave_up"; raises on a difference
local core = require "koophone.core"
local rows = require "koophone.rows"
local Task = require "koophone.task"
local sync = require "bench.sync_replies"

local M = {}
local same, show = sync.same, sync.show

-- what Task.new needs of a client
local CLIENT = { poll_interval = 0.5, poll_max_interval = 10, poll_ratio = 0.1 }

--- A generator of random cases: each call returns a case `{text, ids,
-- jobs, done, zero, cph, seen}`: the reply, the task's ids, its jobs
-- (job_id -> id), the ids whose job already ended, those not run yet
-- (status 0); for a ListJobs page (`cph`), the job ids earlier pages
-- listed.
-- @tparam number seed
-- @treturn function
function M.generator(seed)
  local P = sync.pieces(seed)
  local rnd, pick, ws, jstr, object = P.rnd, P.pick, P.ws, P.jstr, P.object
  local text_value = P.text_value
  local STATUS = { "0", "1", "1", "1", "2", "2", "2", "-1", "3", "2.0", '"2"', "null", "4", "-2", "1e0", "01",
                   "true", "{}", "-" }
  local function status_value()
    if rnd() < 0.85 then return pick { "1", "1", "2", "2", "2", "-1", "0", "3" } end
    return pick(STATUS)
  end

  local function item(job_id, odd)
    local fields = {}
    if not (odd and rnd() < 0.05) then
      local v = jstr(job_id, odd)
      if odd and rnd() < 0.1 then v = pick { "5", "null", '""', jstr(job_id .. "x"), "[]" } end
      fields[#fields + 1] = { "job_id", v }
    end
    if not (odd and rnd() < 0.05) then fields[#fields + 1] = { "status", odd and status_value() or pick { "1", "2", "2", "-1" } } end
    for _, k in ipairs { "execute_msg", "error_code", "error_msg" } do
      if not (odd and rnd() < 0.1) then fields[#fields + 1] = { k, odd and text_value() or jstr(pick(P.TEXTS)) } end
    end
    if rnd() < 0.3 then fields[#fields + 1] = { "instance_id", jstr("kp" .. rnd(999)) } end
    if rnd() < 0.3 then -- a ListJobs job's other fields
      fields[#fields + 1] = { "begin_time", jstr("2026-12-01T10:00:00Z") }
      fields[#fields + 1] = { "end_time", pick { "null", jstr("2026-12-01T10:00:02Z") } }
      fields[#fields + 1] = { "server_id", jstr(("%032x"):format(rnd(99999))) }
    end
    if odd and rnd() < 0.1 then fields[#fields + 1] = { pick { "extra", "jobId", "Status", "" }, pick(P.OTHER) } end
    if odd and rnd() < 0.05 then -- a duplicate key: the last wins
      local f = fields[rnd(#fields)]
      if f then fields[#fields + 1] = { f[1], f[1] == "status" and status_value() or text_value() } end
    end
    if odd and rnd() < 0.02 then return pick { "null", "5", '"x"', "[]", "{}" } end
    return object(fields, odd)
  end

  return function()
    local n = rnd(1, 12)
    local ids, jobs, job_list, done, zero = {}, {}, {}, {}, {}
    for i = 1, n do
      ids[i] = ("kp%06d"):format(rnd(0, 999) * 100 + i)
      local job = rnd() < 0.9 and ("job-%d-%d"):format(i, rnd(99)) or pick { 'j"q' .. i, "j\\" .. i, "中" .. i }
      jobs[job], job_list[i] = ids[i], job
      local r = rnd()
      if r < 0.2 then done[#done + 1] = ids[i] elseif r < 0.35 then zero[#zero + 1] = ids[i] end
    end
    local odd = rnd() < 0.6 and pick { 0.02, 0.1, 0.3 } or 0
    local items = {}
    for i = 1, n do
      if rnd() < 0.9 then items[#items + 1] = item(job_list[i], rnd() < odd) end
    end
    if rnd() < 0.1 then items[#items + 1] = item("job-unknown-" .. rnd(9), false) end
    if rnd() < 0.1 then items[#items + 1] = item(job_list[rnd(n)], rnd() < 0.5) end -- listed twice
    for i = #items, 2, -1 do
      if rnd() < 0.2 then local j = rnd(i); items[i], items[j] = items[j], items[i] end
    end
    local list = "[" .. ws() .. table.concat(items, "," .. ws()) .. ws() .. "]"
    if rnd() < 0.02 then list = pick { "null", '"none"', "{}", "5" } end
    local cph, seen = rnd() < 0.4, nil
    local data = { { "jobs", list } }
    if rnd() < 0.05 or cph then data[#data + 1] = { "count", tostring(n) } end
    if rnd() < 0.02 then data[#data + 1] = { "jobs", pick { "null", "[]", list } } end
    local text
    if cph then -- a ListJobs page: no envelope
      data[#data + 1] = { "request_id", jstr("req-" .. rnd(99)) }
      text = ws() .. object(data) .. ws()
      seen = {}
      if rnd() < 0.3 then seen[job_list[rnd(n)]] = true end
    else
      local env = { { "error_code", pick { '"0"', '"0"', '"0"', "0", "null", '"KOOPHONE.API.1000"' } },
                    { "error_msg", pick { '"ok"', '"ok"', "null" } },
                    { "data", object(data) } }
      if rnd() < 0.02 then env[#env + 1] = { "data", pick { "null", "{}", object { { "jobs", "[]" } } } } end
      text = ws() .. object(env) .. ws()
    end
    local r = rnd()
    if r < 0.03 then text = text:sub(1, rnd(0, #text))
    elseif r < 0.05 then
      local i = rnd(#text)
      text = text:sub(1, i - 1) .. pick { ",", "]", "}", '"', "\\", ":", "\0", "x", "{" } .. text:sub(i + 1)
    end
    return { text = text, ids = ids, jobs = jobs, done = done, zero = zero, cph = cph, seen = seen }
  end
end

-- ---------------------------------------------------------------- comparison

-- a task of the case, in its state before the reply
local function twin(case)
  local jobs = {}
  for job, id in pairs(case.jobs) do jobs[job] = id end
  local t = Task.new(CLIENT, { kind = case.cph and "restart" or "install", id = "task-1", ids = case.ids, jobs = jobs,
                              request_id = "req-1", id_field = case.cph and "phone_id" or "instance_id" })
  for _, id in ipairs(case.done) do -- ended at an earlier query
    t.rows[id], t.job_of[id] = { id = id, status = "ok", vendor_status = 2 }, nil
    t.running = t.running - 1
  end
  for _, id in ipairs(case.zero) do if t.job_of[id] then t.not_started[id] = true end end
  t.finished = t.running == 0
  t.started, t.polls = 0, 3
  return t
end

-- what a task holds once a reply is applied (elapsed: a number on both)
local function state_of(t)
  local out = { running = t.running, finished = t.finished, job_of = t.job_of, not_started = t.not_started, rows = {} }
  for id, row in pairs(t.rows) do
    local copy = {}
    for k, v in pairs(row) do copy[k] = v end
    if type(copy.elapsed) == "number" then copy.elapsed = "number" end
    out.rows[id] = copy
  end
  return out
end

local function fail(what, case, a, b)
  error(("task_replies: %s\n  reply %q\n  jobs %s\n  done %s, zero %s\n  direct    %s\n  reference %s"):format(
    what, case.text:sub(1, 600), show(case.jobs), show(case.done), show(case.zero), show(a), show(b)), 0)
end

local ref = require("cjson").new()
ref.decode_max_depth(64)
ref.decode_invalid_numbers(false)

--- Decodes a case's reply both ways, applies each to a twin task, and
-- raises on any difference: where the direct path built rows, the tasks
-- must end the same and the rest of the body be cjson's; where it decoded
-- the items, the body must be cjson's.
-- @tparam table case from a generator
-- @treturn string "rows", "items" or "gave_up"
function M.compare(case)
  local direct_task, ref_task = twin(case), twin(case)
  local follow = direct_task:_follow_tables()
  local seen_direct, seen_ref = {}, {}
  for job in pairs(case.seen or {}) do seen_direct[job], seen_ref[job] = true, true end
  if case.cph then
    follow = { jobs = follow.jobs, job_of = follow.job_of, not_started = follow.not_started,
               id_field = follow.id_field, later = follow.later, root = true, seen = seen_direct }
  end
  local body, list, changes, count, fresh = core.task_reply(case.text, follow)
  if body == nil then return "gave_up" end
  local ok, want = pcall(ref.decode, case.text)
  if not ok then fail("the fast path took a reply cjson refuses: " .. tostring(want), case, body, nil) end
  if not list then
    if not same(body, want) then fail("bodies differ", case, body, want) end
    return "items"
  end
  local data, want_data = body, want
  if not case.cph then data, want_data = body.data, type(want) == "table" and want.data end
  if type(data) ~= "table" or data.jobs ~= list or type(want_data) ~= "table" or type(want_data.jobs) ~= "table" then
    fail("rows that are not the reply's jobs list", case, body, want)
  end
  data.jobs = want_data.jobs
  local rest_same = same(body, want)
  data.jobs = list
  if not rest_same then fail("bodies differ besides the rows", case, body, want) end
  -- the reference: the items Client:_task_jobs (Client:_list_jobs: each
  -- job id once, counting the new ones) keeps, applied by Task:_apply
  local items, want_fresh = {}, 0
  for _, j in ipairs(want_data.jobs) do
    local job = type(j) == "table" and rows.text(j.job_id)
    if not case.cph then
      if job then items[#items + 1] = j end
    elseif type(j) == "table" and not job then
      items[#items + 1] = j
    elseif job and not seen_ref[job] then
      seen_ref[job], want_fresh = true, want_fresh + 1
      items[#items + 1] = j
    end
  end
  if case.cph and (count ~= #want_data.jobs or fresh ~= want_fresh or not same(seen_direct, seen_ref)) then
    fail(("counts differ: %d items, %d new (want %d, %d)"):format(count, fresh, #want_data.jobs, want_fresh),
         case, seen_direct, seen_ref)
  end
  local n_ref = ref_task:_apply(items)
  local n_direct = direct_task:_apply_rows(list, changes)
  local a, b = state_of(direct_task), state_of(ref_task)
  if n_ref ~= n_direct or not same(a, b) then fail("tasks differ", case, a, b) end
  return "rows"
end

return M
