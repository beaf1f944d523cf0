--- Batches: one operation on a whole fleet, in chunks, with a limit on
-- requests in flight, an optional rate limit, progress, a journal and a
-- report that lists every id exactly once.
--
--     local batch = require "koophone.batch"
--     local report = assert(batch.run(client, "getprop ro.product.model", ids,
--                                     { concurrency = 8, journal = "run.jsonl" }))
--     print(report)                 -- 1000 ids: 998 ok, 2 failed, ...
--
-- * `batch.run(client, command, ids, opts)`: `opts.mode = "async"` (the
--   default: async-command, 100 ids per request, then polling) or `"sync"`
--   (sync-command, 32 ids per request: for quick commands);
-- * `batch.install(client, app, ids, opts)`: app install, 100 ids per request;
-- * `batch.restart(client, phones, opts)`: CPH batch-restart, `client.max_restart`
--   phones per request (each phone an id or `{phone_id=, property=table}`);
-- * the fleet (`koophone.fleet`): `batch.reboot`, `batch.reset`,
--   `batch.backup`, `batch.status` (instances, `client.max_ids` per request,
--   default 100), `batch.reset_phones` (CPH batch-reset, like restart),
--   `batch.phone_status` and `batch.apps` (one id per request);
-- * `batch.resume(client, journal_path, opts)`: follows an interrupted
--   batch's tasks again from its journal, submitting nothing again.
--
-- Options: `concurrency` (requests in flight, submits and status queries
-- alike, default 16), `rate` (submits per second, token bucket with
-- `burst`, default 1), `timeout` (the whole batch, seconds), `task_timeout`
-- (per task, default the client's), `journal` (a file path),
-- `on_progress(p)` with `p = {done, total, ok, failed, error, timeout,
-- rate, eta}` (at most every `progress_interval`, default 0.5 s, and once
-- at the end), `chunk` (ids per request), `image_id` (restart),
-- `stop_on_auth_failure` (when a submit is refused with HTTP 401 or 403
-- before any submit was accepted, send nothing more: the other chunks get
-- "not submitted" rows and `report.aborted` holds the refusal).
--
-- Nothing is sent when the input is invalid: `nil, err` names the field
-- and the index. A chunk whose submit fails gives every one of its ids a
-- row with status "error"; POSTs are never re-sent here (the transport
-- retries only when nothing can have run) — except a submit the gateway
-- throttled (429 `APIGW.0308` after the transport's retries: nothing ran),
-- which goes back in the queue (up to `MAX_REQUEUE` times, 20), so
-- throttling loses no rows.
--
-- Living under the gateway's rate limit: every batch paces its submits and
-- its status queries alike through one adaptive limiter
-- (`koophone.ratelimit`, as the AWS SDKs' adaptive mode): off until the
-- first 429, then a 429 cuts the send rate by 30 % and holds everything
-- until its `Retry-After`, and successes raise the rate again slowly
-- (cubic). The limiter is the client's (`adaptive_rate = true`) or one
-- attached for the batch's duration and shared with batches running beside
-- it on the same client; the option `adaptive = false` (default true)
-- attaches none (a client's own limiter still applies). `on_progress` also gets `throttled` (429s so far) and
-- `send_rate` (requests/s, nil while unthrottled).
--
-- Works from plain code (it blocks, driving the engine) and from inside a
-- `koophone.spawn` coroutine (it yields between steps).
-- @module koophone.batch
local sched = require "koophone.sched"
local loop = require "koophone.loop"
local rows_mod = require "koophone.rows"
local errors = require "koophone.errors"
local validate = require "koophone.validate"
local report_mod = require "koophone.report"
local journal_mod = require "koophone.journal"
local core = require "koophone.core"
local ratelimit = require "koophone.ratelimit"

local M = {}

local limits = validate.limits
local bad = errors.validation
local fail = errors.fail

M.DEFAULT_CONCURRENCY = 16
M.DEFAULT_PROGRESS_INTERVAL = 0.5

-- The fleet's operations (koophone.fleet): the client method, the id field
-- of rows, and what the call gives: "rows" (one per id), a "task", or "one"
-- (one id per request; `row` turns the answer into that id's row).
local FLEET_KINDS = {
  reboot = { call = "reboot", field = "instance_id", gives = "rows" },
  status = { call = "instance_status", field = "instance_id", gives = "rows" },
  reset = { call = "reset", field = "instance_id", gives = "task" },
  backup = { call = "backup", field = "instance_id", gives = "task" },
  phone_reset = { call = "reset_phones", field = "phone_id", gives = "task", phones = true },
  phone = { call = "phone", field = "phone_id", gives = "one", row = function(id, p)
    return { id = id, phone_id = id, status = "ok", state = p.state, vendor_status = p.vendor_status,
             output = p.state }
  end },
  apps = { call = "apps", field = "instance_id", gives = "one", row = function(id, list)
    return { id = id, instance_id = id, status = "ok", apps = list, output = #list .. " apps" }
  end },
}
M.FLEET_KINDS = FLEET_KINDS

-- kinds whose items are phones (an id or {phone_id=, property=})
local function takes_phones(kind) return kind == "restart" or kind == "phone_reset" end

-- per kind: the largest chunk, the id field of rows, the id length bound
local function kind_info(client, kind)
  local fk = FLEET_KINDS[kind]
  if fk then
    local phone = fk.field == "phone_id"
    local max = fk.gives == "one" and 1 or (phone and (client.max_restart or 100)) or client.max_ids or 100
    return max, fk.field, phone and limits.phone_id_chars or limits.id_chars
  end
  if kind == "sync" then return limits.sync_ids, "instance_id", limits.id_chars end
  if kind == "restart" then return client.max_restart or 100, "phone_id", limits.phone_id_chars end
  return limits.async_ids, "instance_id", limits.id_chars
end


--- Checks an install description the way `Client:install_app` does.
-- @tparam table app
-- @treturn boolean|nil
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function M.check_app(app)
  local body, err = validate.app(app)
  if not body then return fail(err) end
  return true
end

-- Checks the ids (or phones) of a batch; returns the id list and the items
-- to send (phone entries for restart).
local function check_ids(client, kind, list, field)
  if type(list) ~= "table" then return nil, bad(field, "must be a list of ids, got " .. type(list)) end
  local _, _, max_chars = kind_info(client, kind)
  local ids, items = {}, {}
  for i, v in ipairs(list) do
    if takes_phones(kind) and type(v) == "table" then
      -- the same check Client:restart_phones makes, before any chunk is sent
      local entry, err = validate.phone(v, ("%s[%d]"):format(field, i))
      if not entry then return nil, err end
      ids[i] = entry.phone_id
      items[entry.phone_id] = entry
    else
      ids[i] = v
    end
  end
  if #ids ~= #list then return nil, bad(field, "must be a list (a sequence)") end
  local ok, err = validate.ids(field, ids, nil, max_chars)
  if not ok then return nil, err end
  return ids, items
end

--- Every option a batch knows (`batch.resume` adds `submit_missing`, `app` and `command`).
M.OPTIONS = validate.set { "concurrency", "rate", "burst", "timeout", "task_timeout",
  "progress_interval", "chunk", "on_progress", "journal", "image_id", "mode", "strict", "stop_on_auth_failure" }
local RESUME_OPTIONS = validate.set { "submit_missing", "app", "command" }
M.OPTIONS.adaptive = true
for k in pairs(M.OPTIONS) do RESUME_OPTIONS[k] = true end

-- Checks the options shared by every batch.
local function check_opts(client, kind, opts, known)
  if type(opts) ~= "table" then return nil, bad("opts", "must be a table") end
  local ok, err = validate.known_keys("option", opts, known or M.OPTIONS)
  if not ok then return nil, err end
  if opts.concurrency ~= nil then
    ok, err = validate.integer("concurrency", opts.concurrency, 1, 1000)
    if not ok then return nil, err end
  end
  if opts.rate ~= nil then
    if type(opts.rate) ~= "number" or opts.rate <= 0 or opts.rate ~= opts.rate or opts.rate == math.huge then
      return nil, bad("rate", "must be a positive number of submits per second, got " .. tostring(opts.rate))
    end
  end
  if opts.burst ~= nil then
    ok, err = validate.integer("burst", opts.burst, 1, 1000)
    if not ok then return nil, err end
  end
  for _, k in ipairs { "timeout", "task_timeout", "progress_interval" } do
    ok, err = validate.seconds(k, opts[k], k ~= "progress_interval")
    if not ok then return nil, err end
  end
  if opts.chunk ~= nil then
    local max = kind_info(client, kind)
    ok, err = validate.integer("chunk", opts.chunk, 1, max)
    if not ok then return nil, err end
  end
  if opts.on_progress ~= nil and type(opts.on_progress) ~= "function" then
    return nil, bad("on_progress", "must be a function")
  end
  if opts.adaptive ~= nil and type(opts.adaptive) ~= "boolean" then
    return nil, bad("adaptive", "must be true or false, got " .. type(opts.adaptive))
  end
  if opts.stop_on_auth_failure ~= nil and type(opts.stop_on_auth_failure) ~= "boolean" then
    return nil, bad("stop_on_auth_failure", "must be a boolean")
  end
  if opts.journal ~= nil and (type(opts.journal) ~= "string" or opts.journal == "") then
    return nil, bad("journal", "must be a file path")
  end
  if opts.image_id ~= nil then
    ok, err = validate.path_id("image_id", opts.image_id)
    if not ok then return nil, err end
  end
  return true
end

-- Checks what the operation sends (command, app).
local function check_operation(client, op, opts)
  if op.kind == "sync" or op.kind == "command" then
    return validate.command(op.command, client.strict_command or opts.strict)
  elseif op.kind == "install" then
    local body, err = validate.app(op.app)
    return body and true, err
  elseif op.kind == "restart" or FLEET_KINDS[op.kind] then
    return true
  end
  return nil, bad("operation", "unknown kind " .. tostring(op.kind))
end

local function split(n, size)
  local chunks = {}
  local first = 1
  while first <= n do
    local last = math.min(n, first + size - 1)
    chunks[#chunks + 1] = { first = first, last = last }
    first = last + 1
  end
  return chunks
end

local function error_rows(ids, first, last, id_field, err, extra)
  local out = {}
  for i = first, last do out[#out + 1] = rows_mod.from_error(ids[i], id_field, err, extra) end
  return out
end

-- Sends one chunk of a fleet operation; returns rows or a task.
local function submit_fleet(client, fk, op, chunk_ids, items, call_opts)
  if fk.phones then
    local phones = {}
    for i, id in ipairs(chunk_ids) do phones[i] = items[id] or id end
    call_opts.image_id = op.image_id
    chunk_ids = phones
  end
  if fk.gives == "one" then
    local id = chunk_ids[1]
    local v, _, err = client[fk.call](client, id, call_opts)
    if not v then return nil, nil, err end
    return { fk.row(id, v) }
  end
  local v, _, err = client[fk.call](client, chunk_ids, call_opts)
  if not v then return nil, nil, err end
  if fk.gives == "task" then return nil, v end
  v.request_id, v.attempts = nil, nil -- each row has them
  return v
end

-- Sends one chunk (inside a runner coroutine); returns rows or a task.
local function submit(client, op, chunk_ids, items, call_opts)
  if FLEET_KINDS[op.kind] then
    return submit_fleet(client, FLEET_KINDS[op.kind], op, chunk_ids, items, call_opts)
  end
  if op.kind == "sync" then
    local r, _, err = client:sync_command(op.command, chunk_ids, call_opts)
    if not r then return nil, nil, err end
    r.request_id, r.attempts = nil, nil -- each row has them; the list goes to the journal as an array
    return r
  elseif op.kind == "command" then
    local t, _, err = client:async_command(op.command, chunk_ids, call_opts)
    if not t then return nil, nil, err end
    return nil, t
  elseif op.kind == "install" then
    local t, _, err = client:install_app(op.app, chunk_ids, call_opts)
    if not t then return nil, nil, err end
    return nil, t
  end
  local phones = {}
  for i, id in ipairs(chunk_ids) do phones[i] = items[id] or id end
  call_opts.image_id = op.image_id
  local t, _, err = client:restart_phones(phones, call_opts)
  if not t then return nil, nil, err end
  return nil, t
end

-- The rows of a finished (or expired) task, in chunk order; `initial` rows
-- (final at submit time) win over "the vendor returned no job".
local function task_rows(task, ids, first, last, id_field, initial)
  local got = {}
  for _, row in ipairs(task:results()) do got[row.id] = row end
  local out = {}
  for i = first, last do
    local id = ids[i]
    local row = got[id]
    if initial and initial[id] and (not row or not row.job_id) then row = initial[id] end
    if not row then
      row = rows_mod.from_error(id, id_field, errors.new { kind = "protocol",
        message = "the task has no row for this id" }, { task_id = task.id })
    end
    out[#out + 1] = row
  end
  return out
end

-- The gateway throttled the submit (429 APIGW.0308) after the transport's
-- retries: nothing ran, so the chunk may simply go again (paced by the
-- limiter). A 503 is not requeued: a service that is down stays down.
local function not_run(err)
  return type(err) == "table" and err.maybe_executed == false and err.http_status == 429
end
--- How often a throttled chunk may be submitted again.
M.MAX_REQUEUE = 20

-- The client's adaptive limiter (koophone.ratelimit) for the batch's
-- submits and status queries: the client's own (adaptive_rate), else one
-- attached for the batch's duration and shared with any batch running
-- beside it on the same client (the gateway's budget is per user).
local function attach_limiter(client, opts)
  local tr = client.transport
  if not tr or opts.adaptive == false then return nil end
  if not tr.limiter then
    tr.limiter = ratelimit.new()
    tr.limiter_batches = 0
  end
  if not tr.limiter_kept then tr.limiter_batches = (tr.limiter_batches or 0) + 1 end
  return tr.limiter
end

local function detach_limiter(client, lim)
  local tr = client.transport
  if not lim or tr.limiter_kept or tr.limiter ~= lim then return end
  tr.limiter_batches = tr.limiter_batches - 1
  if tr.limiter_batches <= 0 then tr.limiter, tr.limiter_batches = nil, nil end
end

-- The batch's coroutines: on the caller's loop when the batch runs inside
-- one (it parks until they end), else on a loop of its own, run to its end
-- from wherever the caller is (blocking, or yielding to its host).
local function run_group(start)
  local l, inside = loop.current(), true
  if not l then l, inside = loop.new(), false end
  local live, all_done = 0, loop.latch()
  local function spawn(fn, ...)
    live = live + 1
    l:spawn(function(...)
      fn(...)
      live = live - 1
      if live == 0 then all_done.signal() end
    end, ...)
  end
  start(spawn)
  if live == 0 then return end
  if inside then all_done.wait() else sched.finish(l) end
end

-- Runs prepared chunks to the end and builds the report (used by every
-- entry point, resume included): `concurrency` workers take chunks from
-- one queue and submit them; each task submitted is followed by its own
-- coroutine (query, sleep, query); every request, submit or status query,
-- holds one of `concurrency` slots while it is in flight.
--- From this many ids, a batch starts with a full collection and pays the
-- collector for each status reply (see execute and Task:_follow).
M.COLLECT_FROM = 10000

local function execute(client, op, ids, items, chunks, opts, jr)
  local engine = client.engine
  -- A fleet-sized batch starts from a collected heap: what the caller
  -- dropped (say the previous step's report, 50+ MB at 100,000 rows) is
  -- freed before this batch's rows are built, so their memory is reused
  -- instead of added to it. One full collection, tens of ms, against a
  -- batch of seconds.
  -- Its task followers also pay the collector for each status reply.
  local fleet_sized = #ids >= M.COLLECT_FROM
  if fleet_sized then collectgarbage("collect") end
  local _, id_field = kind_info(client, op.kind)
  local conc = opts.concurrency or M.DEFAULT_CONCURRENCY
  local started = sched.now()
  local deadline = opts.timeout and started + opts.timeout
  local task_timeout = opts.task_timeout or client.task_timeout or 600
  local interval = opts.progress_interval or M.DEFAULT_PROGRESS_INTERVAL
  local on_progress = opts.on_progress
  local stats = client.transport and client.transport.stats
  local requests0 = stats and stats.requests or 0
  local throttled0 = stats and stats.throttled or 0
  local total = #ids
  local limiter = attach_limiter(client, opts)
  local slots = loop.semaphore(conc)
  local st = { requeued = 0 }
  local pending, next_pending = {}, 1
  for i, c in ipairs(chunks) do
    if not c.rows and not c.task then pending[#pending + 1] = i end
  end
  -- counts of the rows of finished chunks, kept as they finish
  local counted = rows_mod.count {}
  local following = {} -- chunk index -> task, while followed
  -- token bucket for submits
  local rate, burst = opts.rate, opts.burst or 1
  local tokens, refilled = burst, started

  local function progress(force)
    if not on_progress then return end
    local t = sched.now()
    if not force and st.last_progress and t - st.last_progress < interval then return end
    st.last_progress = t
    local c = {}
    for k, v in pairs(counted) do c[k] = v end
    for _, task in pairs(following) do rows_mod.count(task:results(), c) end
    -- rows of tasks still followed count once they are done
    c.total, c.done, c.running = total, c.total - c.running, nil
    local el = t - started
    c.elapsed = el
    c.rate = el > 0 and c.done / el or 0
    c.eta = (c.rate > 0 and c.done < total) and (total - c.done) / c.rate or (c.done >= total and 0 or nil)
    c.throttled = stats and (stats.throttled or 0) - throttled0 or 0
    c.send_rate = limiter and limiter:current()
    on_progress(c)
  end

  local function finish_chunk(i, list, final)
    chunks[i].rows, chunks[i].task, chunks[i].initial = list, nil, nil
    following[i] = nil
    rows_mod.count(list, counted)
    if jr and final then jr:write { type = "rows", chunk = i, rows = list } end
    progress(false)
  end

  -- follows chunk i's task to its end, the batch's timeout or task_timeout
  local function follow(i, task)
    following[i] = task
    local c = chunks[i]
    local limit = sched.now() + task_timeout
    local by_batch = deadline and deadline < limit
    task:_follow(by_batch and deadline or limit, task_timeout, nil, slots, false, fleet_sized)
    local list = task_rows(task, ids, c.first, c.last, id_field, c.initial)
    if task.expired then
      -- expired: not final, a resume may learn more
      if by_batch then
        for _, row in ipairs(list) do
          if row.status == "timeout" then row.message = "still running when the batch timeout came" end
        end
      end
      return finish_chunk(i, list, false)
    end
    finish_chunk(i, list, true)
  end

  -- waits for a token of the submit rate, if there is one
  local function take_token()
    while rate do
      local t = sched.now()
      tokens = math.min(burst, tokens + (t - refilled) * rate)
      refilled = t
      if tokens >= 1 then
        tokens = tokens - 1
        return
      end
      sched.sleep(engine, (1 - tokens) / rate)
    end
  end

  -- why a chunk is not sent, if it is not
  local function held_back()
    if deadline and sched.now() >= deadline then
      return errors.new { kind = "timeout", message = "not submitted: the batch timeout came first" }
    end
    local a = st.abort
    if a then
      return errors.new { kind = a.kind, http_status = a.http_status, code = a.code,
                          message = "not submitted: an earlier request was refused: " .. tostring(a.message) }
    end
  end

  local function submit_chunk(spawn, i)
    local c = chunks[i]
    take_token()
    slots:acquire()
    local why = held_back()
    if why then
      slots:release()
      return finish_chunk(i, error_rows(ids, c.first, c.last, id_field, why, { chunk = i }), false)
    end
    local chunk_ids = {}
    for k = c.first, c.last do chunk_ids[#chunk_ids + 1] = ids[k] end
    if jr then jr:write { type = "submit", chunk = i } end
    local call_opts = {}
    if deadline then call_opts.timeout = math.max(0.001, deadline - sched.now()) end
    local r, task, err = submit(client, op, chunk_ids, items, call_opts)
    slots:release()
    if r or task then
      st.accepted = true
    elseif opts.stop_on_auth_failure and not st.accepted and not st.abort and type(err) == "table"
           and (err.http_status == 401 or err.http_status == 403) then
      st.abort = err -- wrong credentials: every other request would be refused too
    end
    if r then
      finish_chunk(i, r, true)
    elseif task then
      local initial = {}
      for _, id in ipairs(chunk_ids) do
        local row = task.rows and task.rows[id]
        if row and not row.job_id and row.status == "failed" then initial[id] = row end
      end
      if jr then jr:write { type = "task", chunk = i, task = task:describe(), initial = initial } end
      c.initial = initial
      spawn(follow, i, task)
    elseif not_run(err) and (c.requeued or 0) < M.MAX_REQUEUE and not held_back() then
      -- throttled: it never ran; submit it again (the limiter paces it)
      c.requeued = (c.requeued or 0) + 1
      st.requeued = st.requeued + 1
      pending[#pending + 1] = i
    else
      finish_chunk(i, error_rows(ids, c.first, c.last, id_field, err, { chunk = i }), true)
    end
  end

  local function worker(spawn)
    while next_pending <= #pending do
      local i = pending[next_pending]
      next_pending = next_pending + 1
      local why = held_back()
      if why then
        local c = chunks[i]
        finish_chunk(i, error_rows(ids, c.first, c.last, id_field, why, { chunk = i }), false)
      else
        submit_chunk(spawn, i)
      end
    end
  end

  run_group(function(spawn)
    -- tasks already attached (resume) are followed again
    for i, c in ipairs(chunks) do
      if c.task then spawn(follow, i, c.task) end
    end
    for _ = 1, math.min(conc, #pending) do spawn(worker, spawn) end
  end)
  detach_limiter(client, limiter)

  local out = {}
  for i, c in ipairs(chunks) do
    local list = c.rows or error_rows(ids, c.first, c.last, id_field,
      errors.new { kind = "protocol", message = "chunk ended without rows" }, { chunk = i })
    for k, row in ipairs(list) do out[c.first + k - 1] = row end
  end
  -- every input id exactly once, in input order
  for k = 1, total do
    local row = out[k]
    if not row or row.id ~= ids[k] then
      out[k] = rows_mod.from_error(ids[k], id_field, errors.new { kind = "protocol",
        message = "no row for this id" })
    end
  end
  progress(true)
  local rep = report_mod.new {
    rows = out, elapsed = sched.now() - started,
    requests = stats and (stats.requests - requests0) or 0,
    operation = op, client = client, opts = opts,
  }
  rep.aborted = st.abort
  if jr then
    jr:write { type = "end", summary = rep.summary }
    jr:close()
  end
  return rep
end

local function secrets_of(client)
  local a = client.auth
  return a and a.secrets and a:secrets() or nil
end

-- The operation as stored in a journal (no secrets): the journal scrubs
-- every string it writes (a signed URL loses its query string), so it also
-- keeps the SHA-256 of what it may not store, to check what a resume is
-- given again. A resume never sends a redacted stand-in.
local function stored_operation(op)
  local s = { kind = op.kind, command = op.command, image_id = op.image_id }
  if op.command then s.command_sha256 = core.sha256(op.command) end
  if op.app then
    s.app = op.app
    s.url_sha256 = core.sha256(tostring(op.app.install_package_url))
  end
  return s
end

-- What `submit_missing` would send must be the original operation: the
-- stored one when it survived scrubbing, else the caller's, checked
-- against the journal's digest.
local function original_operation(op, opts)
  if op.kind == "install" then
    local app = opts.app or op.app
    local ok, err = validate.app(app)
    if not ok then return nil, err end
    local url = tostring(app.install_package_url)
    if url:find("<redacted>", 1, true) or (op.url_sha256 and core.sha256(url) ~= op.url_sha256) then
      return nil, bad("app", "must be given again, with the install_package_url the batch started with "
                      .. "(the journal keeps only its digest)")
    end
    op.app = app
  elseif op.command then
    local command = opts.command or op.command
    if not op.command_sha256 or core.sha256(command) ~= op.command_sha256 then
      return nil, bad("command", opts.command and "is not the command the batch started with"
        or "must be given again (opts.command): the journal keeps it only scrubbed of URL query strings")
    end
    op.command = command
  end
  return true
end

--- Runs an operation (`{kind="sync"|"command"|"install"|"restart",
-- command=, app=, image_id=}`) on `ids`; the common entry point of
-- `run`, `install`, `restart` and `Report:retry_failed`.
-- @tparam table client
-- @tparam table op
-- @tparam table ids ids (or phone entries for restart)
-- @tparam[opt] table opts see the module
-- @treturn koophone.report.Report|nil
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function M.operation(client, op, ids, opts)
  opts = opts or {}
  if type(client) ~= "table" or not client.engine then
    return fail(bad("client", "must be a koophone client"))
  end
  local ok, err = check_opts(client, op.kind, opts)
  if not ok then return fail(err) end
  local field = takes_phones(op.kind) and "phones" or "ids"
  local list, items = check_ids(client, op.kind, ids, field)
  if not list then return fail(items) end
  if #list == 0 then return fail(bad(field, "must not be empty")) end
  if takes_phones(op.kind) and opts.image_id and not op.image_id then op.image_id = opts.image_id end
  ok, err = check_operation(client, op, opts)
  if not ok then return fail(err) end
  local size = opts.chunk or kind_info(client, op.kind)
  local chunks = split(#list, size)
  local jr
  if opts.journal then
    jr, err = journal_mod.open(opts.journal, { secrets = secrets_of(client) })
    if not jr then return fail(err) end
    local item_list
    if next(items) then
      item_list = {}
      for id, it in pairs(items) do item_list[id] = it end
    end
    local bounds = {}
    for i, c in ipairs(chunks) do bounds[i] = { c.first, c.last } end
    jr:write { type = "batch", version = journal_mod.VERSION, operation = stored_operation(op),
               ids = list, items = item_list, chunks = bounds, started = os.time() }
  end
  op.items = next(items) and items or nil
  return execute(client, op, list, items, chunks, opts, jr)
end

--- Runs a command on many instances.
-- @tparam table client
-- @tparam string command
-- @tparam {string,...} ids instance ids (any number)
-- @tparam[opt] table opts see the module; `mode` "async" (default) or "sync"
-- @treturn koophone.report.Report|nil
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function M.run(client, command, ids, opts)
  opts = opts or {}
  local mode = opts.mode or "async"
  if mode ~= "async" and mode ~= "sync" then
    return fail(bad("mode", "must be \"async\" or \"sync\", got " .. tostring(mode)))
  end
  return M.operation(client, { kind = mode == "sync" and "sync" or "command", command = command, mode = mode },
                     ids, opts)
end

--- Installs an app on many instances (100 per request).
-- @tparam table client
-- @tparam table app as for `Client:install_app`
-- @tparam {string,...} ids instance ids
-- @tparam[opt] table opts see the module
-- @treturn koophone.report.Report|nil
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function M.install(client, app, ids, opts)
  return M.operation(client, { kind = "install", app = app }, ids, opts)
end

--- Restarts many phones (`opts.chunk`, default `client.max_restart`, per request).
-- @tparam table client
-- @tparam table phones phone ids or `{phone_id=, property=table}`
-- @tparam[opt] table opts see the module; plus `image_id`
-- @treturn koophone.report.Report|nil
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function M.restart(client, phones, opts)
  opts = opts or {}
  return M.operation(client, { kind = "restart", image_id = opts.image_id }, phones, opts)
end

--- Reboots many instances (`client.max_ids` per request). A row "ok" means
-- the vendor took the order (the reply has no per-instance result).
-- @tparam table client
-- @tparam {string,...} ids instance ids
-- @tparam[opt] table opts see the module
-- @treturn koophone.report.Report|nil
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function M.reboot(client, ids, opts)
  return M.operation(client, { kind = "reboot" }, ids, opts)
end

--- Resets many instances (KooPhone batch-reset; tasks).
-- @tparam table client
-- @tparam {string,...} ids instance ids
-- @tparam[opt] table opts see the module
-- @treturn koophone.report.Report|nil
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function M.reset(client, ids, opts)
  return M.operation(client, { kind = "reset" }, ids, opts)
end

--- Backs many instances up (tasks).
-- @tparam table client
-- @tparam {string,...} ids instance ids
-- @tparam[opt] table opts see the module
-- @treturn koophone.report.Report|nil
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function M.backup(client, ids, opts)
  return M.operation(client, { kind = "backup" }, ids, opts)
end

--- The status of many instances (batch-query-status): rows "ok" with
-- `state` ("running", "starting", ...) and `vendor_status`.
-- @tparam table client
-- @tparam {string,...} ids instance ids
-- @tparam[opt] table opts see the module
-- @treturn koophone.report.Report|nil
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function M.status(client, ids, opts)
  return M.operation(client, { kind = "status" }, ids, opts)
end

--- Resets many cloud phones (CPH batch-reset; `client.max_restart` per request).
-- @tparam table client
-- @tparam table phones phone ids or `{phone_id=, property=table}`
-- @tparam[opt] table opts see the module; plus `image_id`
-- @treturn koophone.report.Report|nil
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function M.reset_phones(client, phones, opts)
  opts = opts or {}
  return M.operation(client, { kind = "phone_reset", image_id = opts.image_id }, phones, opts)
end

--- The status of many cloud phones (CPH phone detail, one request per
-- phone): rows "ok" with `state` ("running", "restart_failed", ...) and
-- `vendor_status`; an unknown phone is an "error" row (HTTP 404).
-- @tparam table client
-- @tparam {string,...} phones phone ids
-- @tparam[opt] table opts see the module
-- @treturn koophone.report.Report|nil
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function M.phone_status(client, phones, opts)
  return M.operation(client, { kind = "phone" }, phones, opts)
end

--- The installed apps of many instances (app-list, every page, one
-- instance per request): rows "ok" with `apps` (see `Client:apps`).
-- @tparam table client
-- @tparam {string,...} ids instance ids
-- @tparam[opt] table opts see the module
-- @treturn koophone.report.Report|nil
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function M.apps(client, ids, opts)
  return M.operation(client, { kind = "apps" }, ids, opts)
end

--- Follows an interrupted batch again from its journal.
--
-- Chunks with final rows in the journal are taken as they are; chunks with
-- a task are re-attached (`client:task`) and polled; nothing is submitted
-- again. A chunk whose submit started but left no task id gets status
-- "error" (it may have run: `maybe_executed = true`). Chunks never submitted
-- get status "error" with the message "not submitted before the
-- interruption" — or are submitted now with `opts.submit_missing = true`.
-- What is submitted then is exactly the original operation, never a
-- redacted stand-in: the journal keeps URL query strings scrubbed, so for an
-- install pass `opts.app` again, and for a command holding a signed URL
-- `opts.command`; each is checked against the SHA-256 the journal kept,
-- and the resume is refused when it differs. `report:retry_failed()` can
-- run them later.
-- Progress is appended to the same journal, so a resume can be resumed.
-- @tparam table client
-- @tparam string path the journal
-- @tparam[opt] table opts batch options, plus `submit_missing`, `app`, `command`
-- @treturn koophone.report.Report|nil
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function M.resume(client, path, opts)
  opts = opts or {}
  local state, err = journal_mod.load(path)
  if not state then return fail(err) end
  local op = state.operation
  if type(op) ~= "table" or not op.kind or type(state.ids) ~= "table" then
    return fail(errors.new { kind = "validation", field = "journal", message = "journal has no operation or ids" })
  end
  local ok
  ok, err = check_opts(client, op.kind, opts, RESUME_OPTIONS)
  if not ok then return fail(err) end
  local ids = state.ids
  local items = state.items or {}
  op.items = next(items) and items or nil
  local _, id_field = kind_info(client, op.kind)
  local chunks = {}
  local missing = {}
  for i, c in ipairs(state.chunks) do
    local ch = { first = c.first, last = c.last }
    if c.rows then
      ch.rows = c.rows
    elseif c.task then
      local t = c.task
      local task, _, terr = client:task(t.id, { kind = t.kind, jobs = t.jobs, ids = t.ids })
      if task then
        ch.task, ch.initial = task, c.initial
      else
        ch.rows = error_rows(ids, c.first, c.last, id_field, terr, { chunk = i })
      end
    elseif c.submitted then
      local e = errors.new { kind = "protocol", maybe_executed = true,
        message = "the submit was interrupted before the vendor's answer was recorded: it may have run" }
      ch.rows = error_rows(ids, c.first, c.last, id_field, e, { chunk = i })
    elseif opts.submit_missing then
      missing[#missing + 1] = i
    else
      ch.rows = error_rows(ids, c.first, c.last, id_field, errors.new {
        kind = "cancelled", message = "not submitted before the interruption" }, { chunk = i })
    end
    chunks[i] = ch
  end
  if #missing > 0 then
    ok, err = original_operation(op, opts)
    if not ok then return fail(err) end
  end
  local jr
  jr, err = journal_mod.open(path, { secrets = secrets_of(client) })
  if not jr then return fail(err) end
  return execute(client, op, ids, items, chunks, opts, jr)
end

return M
