--- Tasks: what `async_command`, `install_app` and `restart_phones` return.
--
-- A task knows which job belongs to which instance (or phone) and follows
-- the jobs until none is running (status 1) or not run yet (status 0, the
-- first state of app install jobs in the SDK era; see `koophone.rows`):
--
--     local task = assert(client:async_command("sleep 2", ids))
--     local rows, err = task:wait { timeout = 60 }   -- blocks, or yields
--
-- * `task:poll()` never blocks: it returns `done, rows`, starting a status
--   query when one is due and picking up its answer when it has arrived.
-- * `task:wait{timeout, interval, max_interval, on_progress}` waits with
--   adaptive backoff: the first query after `interval` (0.5 s), then every
--   `ratio` (10 %) of the time the task has run so far, never more often
--   than `interval` nor less often than `max_interval` (10 s). A job is so
--   seen done at most about 10 % of its duration plus `interval` after it
--   ended, with few queries for long jobs; `Retry-After` is honoured by
--   the transport. Outside a scheduler it blocks
--   in the engine (no busy loop); inside `koophone.spawn` it yields.
-- * Waiters of one task (coroutines, OpenResty handlers sharing the task
--   object) share its status queries: a query in flight is not sent again
--   (for at most `Task.SHARE_QUERY` seconds: its waiter may have been
--   abandoned). A wait that times out ends that wait only — its rows show
--   the running jobs as "timeout" — and the task goes on: another waiter,
--   or a later `wait`, still sees its jobs end.
--
-- Rows list every id exactly once, in the order given (see `koophone.rows`).
-- Command and install tasks are queried with `GET /v1/instances/tasks/{id}`,
-- restart tasks with one ListJobs call by request id (paged).
-- @module koophone.task
local sched = require "koophone.sched"
local loop = require "koophone.loop"
local rows = require "koophone.rows"
local errors = require "koophone.errors"
local validate = require "koophone.validate"

local Task = {}
Task.__index = Task

--- Task kinds whose id is a CPH request id, followed with ListJobs.
Task.CPH_KINDS = { restart = true, phone_reset = true }
local CPH_KINDS = Task.CPH_KINDS

--- Builds a task (used by the client; see `Client:task` to attach to an
-- existing one).
-- @tparam table client
-- @tparam table t `kind`, `id`, `ids`, `jobs` (job_id -> id), `rows`
--   (initial final rows by id), `id_field`, `request_id`
-- @treturn Task
function Task.new(client, t)
  local self = setmetatable({
    client = client, kind = t.kind, id = t.id, request_id = t.request_id,
    id_field = t.id_field or "instance_id", jobs = t.jobs or {}, rows = {}, order = {},
    -- running ids have no row until their job ends (a fleet-sized batch
    -- would hold 100,000 of them): only their job id, and which ones the
    -- vendor has not started yet (status 0)
    job_of = {}, not_started = {},
    running = 0, polls = 0, started = sched.now(), finished = false,
    interval = client.poll_interval, max_interval = client.poll_max_interval,
    ratio = client.poll_ratio or 0.1,
  }, Task)
  self.next_due = self.started + self.interval
  local extra_key = CPH_KINDS[self.kind] and "request_id" or "task_id"
  local seen = {}
  local function add(id)
    if seen[id] then return end
    seen[id] = true
    self.order[#self.order + 1] = id
  end
  for _, id in ipairs(t.ids or {}) do add(id) end
  for job_id, id in pairs(self.jobs) do
    -- without ids given, the jobs say which ids there are; an id the vendor
    -- answered with but we did not send is followed, not reported
    if not t.ids then add(id) end
    self.job_of[id] = job_id
    self.running = self.running + 1
  end
  for id, row in pairs(t.rows or {}) do
    if not self.job_of[id] then
      row[extra_key] = row[extra_key] or self.id
      self.rows[id] = row
    end
  end
  for _, id in ipairs(self.order) do
    if not self.rows[id] and not self.job_of[id] then
      self.rows[id] = { id = id, [self.id_field] = id, status = "error", [extra_key] = self.id,
                        request_id = t.request_id,
                        message = "the vendor returned no job for this id" }
    end
  end
  -- attached by id alone: the first answer tells which jobs there are
  self.discover = t.jobs == nil
  if self.running == 0 and not self.discover then self.finished = true end
  return self
end

-- Adopts the jobs of the first answer of a task attached by id alone: rows
-- are keyed by job id (by phone id for restart tasks).
function Task:_discover(jobs)
  self.discover = false
  for _, j in ipairs(jobs) do
    local job = rows.text(j.job_id)
    local id = (CPH_KINDS[self.kind] and rows.text(j.phone_id)) or job
    if id and job and not self.rows[id] and not self.job_of[id] then
      self.jobs[job] = id
      self.order[#self.order + 1] = id
      self.job_of[id] = job
      self.running = self.running + 1
    end
  end
end

function Task:__tostring()
  return ("koophone.task %s (%s, %d ids, %d running)"):format(
    tostring(self.id), self.kind, #self.order, self.running)
end

-- The rows so far, in the order of the ids given, with `row_of(self, id)`
-- for each id whose job still runs.
local function rows_with(self, row_of)
  local out = {}
  for i, id in ipairs(self.order) do out[i] = self.rows[id] or row_of(self, id) end
  return out
end

--- The rows so far, in the order of the ids given.
-- @treturn {table,...}
function Task:results() return rows_with(self, Task._running_row) end

-- The row of an id whose job still runs (made when asked for).
function Task:_running_row(id)
  local row = { id = id, [self.id_field] = id, status = "running", vendor_status = self.not_started[id] and 0 or 1,
                job_id = self.job_of[id], request_id = self.request_id }
  row[CPH_KINDS[self.kind] and "request_id" or "task_id"] = self.id
  return row
end

--- Counts by status: `{ok=, failed=, error=, timeout=, running=, done=, total=}`.
-- @treturn table
function Task:counts()
  return rows.count(self:results())
end

-- Applies one query's jobs (the vendor's items); returns how many finished
-- in it. A job's row is built once, here, when the job ends.
function Task:_apply(jobs)
  if self.discover then self:_discover(jobs) end
  local changed = 0
  local extra = { elapsed = sched.now() - self.started, polls = self.polls }
  if CPH_KINDS[self.kind] then extra.request_id = self.id
  else extra.task_id, extra.request_id = self.id, self.request_id end
  for _, j in ipairs(jobs) do
    local job = rows.text(j.job_id)
    local id = job and self.jobs[job]
    if id and self.job_of[id] then
      local status, vendor_status = rows.status(j.status)
      if status ~= "running" then
        local new = rows.from_item(id, self.id_field, j, extra)
        if status == "error" and j.status == nil then new.message = "job has no status" end
        self.rows[id], self.job_of[id], self.not_started[id] = new, nil, nil
        self.running = self.running - 1
        changed = changed + 1
      else
        -- still 0 (not run yet) or 1 (running): say which
        self.not_started[id] = vendor_status == 0 or nil
      end
    end
  end
  if self.running == 0 then self.finished = true end
  return changed
end

-- Applies the rows of the jobs that ended, built from a query's bytes
-- (src/job_rows.c; `changes`: id -> status is 0, for jobs still running):
-- what `_apply` does with the items of the same reply.
function Task:_apply_rows(list, changes)
  local changed = 0
  local elapsed, polls = sched.now() - self.started, self.polls
  local task_id, request_id = self.id, self.request_id
  if CPH_KINDS[self.kind] then task_id, request_id = nil, self.id end
  local job_of, rows_by_id, not_started = self.job_of, self.rows, self.not_started
  for i = 1, #list do
    local row = list[i]
    local id = row.id
    if job_of[id] then -- a job listed twice: the first answer counts
      row.task_id, row.request_id, row.elapsed, row.polls = task_id, request_id, elapsed, polls
      rows_by_id[id], job_of[id], not_started[id] = row, nil, nil
      changed = changed + 1
    end
  end
  if changes then
    for id, zero in pairs(changes) do
      if job_of[id] then not_started[id] = zero or nil end
    end
  end
  self.running = self.running - changed
  if self.running == 0 then self.finished = true end
  return changed
end

-- The task's tables, for a query's rows to be built from its bytes
-- (src/job_rows.c); nil while the first answer is to tell which jobs
-- there are.
function Task:_follow_tables()
  if self.discover or self.follow == false then return nil end
  local f = self.follow
  if not f then
    local cph = CPH_KINDS[self.kind]
    -- the fields _apply_rows sets: elapsed, polls and request_id (CPH: the
    -- task's id); task_id and the submit's request_id, if any (KooPhone)
    local later = (cph or not self.request_id) and 3 or 4
    f = { jobs = self.jobs, job_of = self.job_of, not_started = self.not_started, id_field = self.id_field,
          later = later, root = cph or nil }
    self.follow = f
  end
  return f
end

-- One status query, given at most `timeout` seconds.
function Task:_query(timeout)
  local c = self.client
  local list, _, err
  if CPH_KINDS[self.kind] then
    list, _, err = c:_list_jobs({ request_id = self.id, timeout = timeout }, function(j) return j end,
                                self:_follow_tables())
  else
    list, _, err = c:_task_jobs(self.id, { timeout = timeout }, self:_follow_tables())
  end
  return list, err
end

-- What one query learnt; schedules the next one.
function Task:_query_done(jobs, err)
  self.polls = self.polls + 1
  if jobs then
    self.last_error = nil
    local changed
    if jobs.rows then
      -- rows built from the bytes, then the items of any page that was
      -- not plain (they came after)
      changed = self:_apply_rows(jobs.rows, jobs.changes)
      if jobs.items and #jobs.items > 0 then changed = changed + self:_apply(jobs.items) end
    else
      changed = self:_apply(jobs)
    end
    if changed > 0 then self.progressed = true end
  else
    self.last_error = err
    if not err.retryable then
      -- the task cannot be read (not found, forbidden, ...): every job
      -- still running is an error, with the reason
      self:_fail_running(err)
    end
  end
  local now = sched.now()
  local gap = math.max(self.interval, math.min(self.max_interval, self.ratio * (now - self.started)))
  self.next_due = now + gap
end

-- Ends every running job as an error (the command was submitted: it may
-- have run).
function Task:_fail_running(err)
  self.last_error = err
  for _, id in ipairs(self.order) do
    local job_id = self.job_of[id]
    if job_id then
      local row = rows.from_error(id, self.id_field, err, { job_id = job_id, task_id = self.id })
      row.maybe_executed = true
      self.rows[id], self.job_of[id] = row, nil
      self.running = self.running - 1
    end
  end
  self.finished = true
  self.progressed = true
end

local function closed_error()
  return errors.new { kind = "closed", message = "the client was closed while the task ran", maybe_executed = true }
end

-- True while another waiter's status query is in flight and recent
-- enough to wait for (see Task.SHARE_QUERY).
function Task:_shared_query(t)
  local asked = self.querying
  return asked ~= nil and t < asked + Task.SHARE_QUERY
end

--- Advances the task without blocking, for a frame loop: starts a status
-- query when one is due (on a private `koophone.loop` stepped here) and
-- picks up its answer once it has arrived. It shares status queries with
-- any `wait` on the same task, as waiters do with each other.
-- @treturn boolean done (no job is running any more)
-- @treturn {table,...} rows so far (every id once)
function Task:poll()
  if self.finished then return true, self:results() end
  if self.client.closed then
    -- nothing can be learnt any more: the running jobs end as errors
    self:_fail_running(closed_error())
    return true, self:results()
  end
  local t = sched.now()
  if not self.poller and t >= self.next_due and not self:_shared_query(t) then
    local l = loop.new()
    self.poller = l
    l:spawn(function()
      -- its answer is applied at a later poll(): a frame loop that stops
      -- polling holds a waiter up for at most SHARE_QUERY
      local mine = sched.now()
      self.querying = mine
      local jobs, err = self:_query()
      if self.querying == mine then self.querying = nil end
      if self.poller == l then -- not expired meanwhile
        self.poller = nil
        if not self.finished then self:_query_done(jobs, err) end
      end
    end)
  end
  if self.poller then self.poller:step() end
  return self.finished, self:results()
end

-- The row of an id whose job was still running when a wait ended (a new
-- table, as _running_row's).
function Task:_timeout_row(id)
  local row = self:_running_row(id)
  row.status = "timeout"
  row.maybe_executed = true -- submitted, and perhaps still running
  row.message = "still running when the wait ended"
  row.elapsed = sched.now() - self.started
  return row
end

-- The rows so far with every running id as "timeout", for a wait that
-- ends before the task does: the task itself goes on (another waiter, or
-- a later wait, may still see its jobs end).
function Task:_timeout_rows() return rows_with(self, Task._timeout_row) end

--- Marks every running row as timed out and finishes the task.
-- @treturn {table,...} rows
function Task:expire()
  for _, id in ipairs(self.order) do
    if self.job_of[id] then
      self.rows[id], self.job_of[id] = self:_timeout_row(id), nil
      self.running = self.running - 1
    end
  end
  self.poller = nil -- a query poll() started is forgotten
  self.finished, self.expired = true, true
  return self:results()
end

local WAIT_OPTIONS = validate.set { "timeout", "interval", "max_interval", "ratio", "on_progress" }

-- Every option of wait(): known, finite, positive (a NaN interval would
-- never poll and report finished jobs as timed out).
local function check_wait_opts(opts)
  if type(opts) ~= "table" then return nil, errors.validation("opts", "must be a table") end
  local ok, err = validate.known_keys("option", opts, WAIT_OPTIONS)
  for _, k in ipairs { "timeout", "interval", "max_interval", "ratio" } do
    -- timeout = 0: look once, do not wait
    if ok then ok, err = validate.seconds(k, opts[k], k ~= "timeout") end
  end
  if ok and opts.ratio ~= nil and opts.ratio > 1 then
    ok, err = nil, errors.validation("ratio", "must be at most 1 (a share of the task's age), got " .. opts.ratio, 1)
  end
  if ok and opts.on_progress ~= nil and type(opts.on_progress) ~= "function" then
    ok, err = nil, errors.validation("on_progress", "must be a function")
  end
  return ok, err
end

--- Waits until no job is running, or the timeout.
-- @tparam[opt] table opts `timeout` (seconds; the client's task_timeout),
--   `interval` (first query delay and shortest gap), `max_interval`, `ratio`,
--   `on_progress(done, total, task)` (called when jobs finish)
-- @treturn {table,...}|nil rows, every id once
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on timeout or when the task cannot be read:
--   `err.kind` and `err.rows` (running ids as status "timeout")
function Task:wait(opts)
  opts = opts or {}
  local ok, err = check_wait_opts(opts)
  if not ok then return errors.fail(err) end
  if opts.interval then
    self.interval = opts.interval
    self.next_due = math.min(self.next_due, self.started + opts.interval)
  end
  if opts.max_interval then self.max_interval = opts.max_interval end
  if opts.ratio then self.ratio = opts.ratio end
  local timeout = opts.timeout or self.client.task_timeout
  return self:_follow(sched.now() + timeout, timeout, opts.on_progress, nil, true)
end

--- How long (seconds) a waiter leaves the status query another waiter of
-- the same task has in flight to it before it queries itself (a waiter
-- may be abandoned mid-query: its coroutine never resumed again).
Task.SHARE_QUERY = 1

-- Query, sleep, query: until no job runs or `deadline`. `gate` (a
-- `koophone.loop` semaphore) is held for each query: a batch's request
-- slots. At `deadline` the task expires (the batch's way), or, with
-- `keep` (Task:wait's), only this wait ends: its rows show the running
-- jobs as "timeout", and the task goes on for other waiters. Waiters of
-- one task share its status queries: one in flight is not sent again.
-- `collect`: pay the collector for each reply (a fleet-sized batch).
function Task:_follow(deadline, timeout, on_progress, gate, keep, collect)
  local engine = self.client.engine
  local total = #self.order
  while not self.finished do
    if self.client.closed then
      self:_fail_running(closed_error())
      break
    end
    local t = sched.now()
    if t >= deadline then
      local rs = keep and self:_timeout_rows() or self:expire()
      return errors.fail(errors.new { kind = "timeout", rows = rs, task_id = self.id,
        message = ("task %s: jobs still running after %gs"):format(self.id, timeout) })
    end
    if self:_shared_query(t) then
      -- another waiter's query is in flight: its answer is this one's too
      sched.sleep(engine, math.min(0.02, deadline - t))
    elseif t < self.next_due then
      sched.sleep(engine, math.min(self.next_due, deadline) - t)
    else
      if gate then gate:acquire() end
      -- bounded by the wait's own deadline: a stalled status query must
      -- not hold the caller past `timeout`
      local mine = sched.now()
      self.querying = mine
      local jobs, err = self:_query(math.max(0.001, deadline - t))
      if self.querying == mine then self.querying = nil end
      if gate then gate:release() end
      if not self.finished then self:_query_done(jobs, err) end
      -- in a fleet-sized batch, the collector is paid for each reply as
      -- it comes: the heap then stays near what it keeps, not twice that.
      -- 8 KB of work per job the reply listed (rows built in C or not):
      -- W3 at 100,000 peaks at 108-119 MB RSS; paid by the rows built
      -- alone (most replies build none), 126-130 MB. Not below that size:
      -- on a heap of a few MB, 800 KB of work is a whole cycle per query
      -- (a 1,000-instance batch took twice the CPU in LuaJIT)
      if collect then
        local listed = jobs and (jobs.count and jobs.count + (jobs.items and #jobs.items or 0) or #jobs) or 0
        collectgarbage("step", 8 * listed)
      end
      if self.progressed and on_progress then
        self.progressed = false
        on_progress(total - self.running, total, self)
      end
    end
  end
  if self.last_error and not self.last_error.retryable then
    local e = self.last_error
    return errors.fail(errors.new { kind = e.kind, http_status = e.http_status, code = e.code,
                                    message = e.message, request_id = e.request_id, rows = self:results() })
  end
  return self:results()
end

--- What a journal needs to follow this task again after a restart.
-- @treturn table `{kind=, id=, jobs=, ids=}`
function Task:describe()
  return { kind = self.kind, id = self.id, jobs = self.jobs, ids = self.order }
end

return Task
