--- Workflows: batch steps that compose. Each step acts only on the ids
-- that succeeded in the step before; the final report has one row per
-- input id and says where each one stopped.
--
--     local workflow = require "koophone.workflow"
--     local report = workflow.new(client, { phone_to_instance = map })
--       :restart(phones)
--       :wait(5)
--       :install(app)
--       :run("pm list packages", { expect = "package:com.example" })
--       :execute()
--     for _, row in ipairs(report:failed()) do print(row.id, row.dropped_at, row.message) end
--
-- Ids live in two domains: CPH steps (`restart`) take phone ids, KooPhone
-- steps (`install`, `run`) take instance ids. When the workflow moves from
-- phones to instances it maps each id with `phone_to_instance` (a function
-- `phone_id -> instance_id` or a table; default: the same id), and back
-- with `instance_to_phone`. An id the mapping does not know drops out with
-- status "error". Report rows keep the id of the workflow's first step in
-- `row.id`; `row.step_id` is the id the last step used when it differs.
--
-- Each final row has `step` (the last step the id reached) and, when it
-- did not get through every step, `dropped_at` (the step where it failed;
-- `nil` for ids that passed them all). Step names are the method names
-- (`restart`, `install`, `run`, ...) or `opts.name`; a repeated name gets
-- a suffix (`run#2`).
--
-- Fleet steps (`koophone.fleet`): `reboot`, `reset`, `backup` (instances),
-- `reset_phones` (CPH), `wait_running` (polls the status until each id
-- runs again, or fails it at a deadline) and `verify_installed` (reads each
-- instance's app list: an install the vendor reported as done but that did
-- not land fails here).
-- @module koophone.workflow
local batch = require "koophone.batch"
local report_mod = require "koophone.report"
local errors = require "koophone.errors"
local sched = require "koophone.sched"
local rows_mod = require "koophone.rows"
local validate = require "koophone.validate"

local M = {}

-- A workflow under construction (the Workflow type, below).
local Workflow = {}
Workflow.__index = Workflow
M.Workflow = Workflow

local function mapper(m, field)
  if m == nil then return function(id) return id end end
  if type(m) == "function" then return m end
  if type(m) == "table" then return function(id) return m[id] end end
  error("workflow: " .. field .. " must be a function or a table", 3)
end

--- Starts a workflow.
-- @tparam table client
-- @tparam[opt] table opts `phone_to_instance`, `instance_to_phone`
--   (functions or tables; default identity), `ids` (the input of the
--   first step when the step is not given any), and batch options shared by
--   every step (`concurrency`, `rate`, `timeout`, `on_progress`, ...;
--   `on_progress` gets `p.step` too)
-- @treturn Workflow
function M.new(client, opts)
  opts = opts or {}
  local self = setmetatable({ client = client, steps = {}, names = {}, ids = opts.ids, defaults = {} }, Workflow)
  self.to_instance = mapper(opts.phone_to_instance, "phone_to_instance")
  self.to_phone = mapper(opts.instance_to_phone, "instance_to_phone")
  for k, v in pairs(opts) do
    if k ~= "phone_to_instance" and k ~= "instance_to_phone" and k ~= "ids" then self.defaults[k] = v end
  end
  self:_check("workflow option", self.defaults, batch.OPTIONS)
  return self
end

-- Step options a built-in step takes besides the batch's.
local STEP_OPTIONS = validate.set { "name", "ids", "expect" }
for k in pairs(batch.OPTIONS) do STEP_OPTIONS[k] = true end
-- wait_running's and verify_installed's own
local WAIT_RUNNING_OPTIONS = validate.set { "name", "ids", "deadline", "interval" }
local VERIFY_OPTIONS = validate.set { "name", "ids", "package", "version" }
for k in pairs(batch.OPTIONS) do
  WAIT_RUNNING_OPTIONS[k] = true
  VERIFY_OPTIONS[k] = true
end
-- options of a step that are not the batch's
local STEP_ONLY = validate.set { "name", "ids", "expect", "deadline", "interval", "package", "version" }

-- Keeps the first bad option found while the workflow is built: the
-- builder methods chain, so execute() reports it before anything is sent.
function Workflow:_check(where, opts, known)
  if self.bad then return end
  local ok, err = validate.known_keys(where, opts, known)
  if not ok then self.bad = err end
end

--- A workflow under construction.
-- @type Workflow

function Workflow:_add(kind, domain, opts, fn, known)
  opts = opts or {}
  if kind ~= "step" then self:_check(kind .. " step option", opts, known or STEP_OPTIONS) end
  local name = opts.name or kind
  self.names[name] = (self.names[name] or 0) + 1
  if self.names[name] > 1 then name = name .. "#" .. self.names[name] end
  self.steps[#self.steps + 1] = { kind = kind, name = name, domain = domain, opts = opts, fn = fn }
  return self
end

function Workflow:_batch_opts(step)
  local o = {}
  for k, v in pairs(self.defaults) do o[k] = v end
  for k, v in pairs(step.opts) do
    if not STEP_ONLY[k] then o[k] = v end
  end
  if o.on_progress then
    local f = o.on_progress
    o.on_progress = function(p) p.step = step.name; return f(p) end
  end
  return o
end

--- Restarts phones (CPH batch-restart); see `koophone.batch.restart`.
-- @tparam[opt] table phones phone ids (or `{phone_id=, property=}`); only
--   for a first step, later steps take the survivors
-- @tparam[opt] table opts batch options, `image_id`, `name`
-- @treturn Workflow self
function Workflow:restart(phones, opts)
  return self:_add("restart", "phone", opts, function(client, ids, o)
    return batch.restart(client, ids, o)
  end):_input(phones)
end

--- Installs an app; see `koophone.batch.install`.
-- @tparam table app
-- @tparam[opt] table opts batch options, `ids` (first step only), `name`
-- @treturn Workflow self
function Workflow:install(app, opts)
  return self:_add("install", "instance", opts, function(client, ids, o)
    return batch.install(client, app, ids, o)
  end):_input(opts and opts.ids)
end

local function check_expect(expect)
  if expect == nil then return nil end
  if type(expect) == "string" then
    return function(row)
      if row.output and row.output:find(expect, 1, true) then return true end
      return false, ("output does not contain %q"):format(expect)
    end
  end
  if type(expect) == "function" then return expect end
  error("workflow: expect must be a string or a function(row) -> ok, message", 3)
end

--- Runs a command; see `koophone.batch.run`.
-- @tparam string command
-- @tparam[opt] table opts batch options (`mode` "async"/"sync"), `ids`
--   (first step only), `name`, `expect` (a plain substring the output
--   must contain, or `function(row) -> ok, message`): an ok row that does
--   not meet it becomes status "failed" and drops out
-- @treturn Workflow self
function Workflow:run(command, opts)
  local expect = check_expect(opts and opts.expect)
  return self:_add("run", "instance", opts, function(client, ids, o)
    local rep, msg, err = batch.run(client, command, ids, o)
    if not rep or not expect then return rep, msg, err end
    for _, row in ipairs(rep.rows) do
      if row.status == "ok" then
        local met, why = expect(row)
        if not met then
          row.status = "failed"
          row.message = why or "output is not what was expected"
          row.expectation = true
        end
      end
    end
    return report_mod.new { rows = rep.rows, elapsed = rep.summary.elapsed, requests = rep.summary.requests }
  end):_input(opts and opts.ids)
end

--- Waits before the next step (e.g. for restarted phones to boot).
-- Nothing drops out here.
-- @tparam number seconds
-- @treturn Workflow self
function Workflow:wait(seconds)
  assert(type(seconds) == "number" and seconds >= 0, "workflow:wait(seconds): seconds must be >= 0")
  return self:_add("wait", nil, nil, function(client, ids)
    sched.sleep(client.engine, seconds)
    local out = {}
    for i, id in ipairs(ids) do out[i] = { id = id, status = "ok" } end
    return report_mod.new { rows = out, elapsed = seconds }
  end)
end

--- Reboots instances; see `koophone.batch.reboot` (a row "ok" means the
-- vendor took the order: follow with `wait_running`).
-- @tparam[opt] table ids instance ids (first step only)
-- @tparam[opt] table opts batch options, `name`
-- @treturn Workflow self
function Workflow:reboot(ids, opts)
  return self:_add("reboot", "instance", opts, function(client, list, o)
    return batch.reboot(client, list, o)
  end):_input(ids)
end

--- Resets instances (KooPhone batch-reset); see `koophone.batch.reset`.
-- @tparam[opt] table ids instance ids (first step only)
-- @tparam[opt] table opts batch options, `name`
-- @treturn Workflow self
function Workflow:reset(ids, opts)
  return self:_add("reset", "instance", opts, function(client, list, o)
    return batch.reset(client, list, o)
  end):_input(ids)
end

--- Backs instances up; see `koophone.batch.backup`.
-- @tparam[opt] table ids instance ids (first step only)
-- @tparam[opt] table opts batch options, `name`
-- @treturn Workflow self
function Workflow:backup(ids, opts)
  return self:_add("backup", "instance", opts, function(client, list, o)
    return batch.backup(client, list, o)
  end):_input(ids)
end

--- Resets cloud phones (CPH batch-reset); see `koophone.batch.reset_phones`.
-- @tparam[opt] table phones phone ids or `{phone_id=, property=}` (first step only)
-- @tparam[opt] table opts batch options, `image_id`, `name`
-- @treturn Workflow self
function Workflow:reset_phones(phones, opts)
  return self:_add("reset_phones", "phone", opts, function(client, list, o)
    return batch.reset_phones(client, list, o)
  end):_input(phones)
end

local PHONE_FAILED = { [-5] = true, [-6] = true, [-7] = true, [-8] = true, [-9] = true }

-- A status row that will not get better by waiting: the vendor refused the
-- query (4xx but 429: an unknown phone is a 404) or the phone's state is a
-- failure (-6 restart failed, ...).
local function final_failure(row, phone)
  if row.status == "ok" then
    if phone and PHONE_FAILED[row.vendor_status] then
      return ("%s (status %d)"):format(row.state, row.vendor_status)
    end
    return nil
  end
  local h = row.http_status
  if h and h >= 400 and h < 500 and h ~= 429 then return row.message or ("HTTP " .. h) end
  return nil
end

-- wait_running's body: polls batch.status (instances) or batch.phone_status
-- (phones) for the ids not running yet, until none is left or the deadline.
local function wait_running(client, ids, o, domain, deadline, interval)
  local started = sched.now()
  local phone = domain == "phone"
  local field = phone and "phone_id" or "instance_id"
  local poll = phone and batch.phone_status or batch.status
  local on_progress = o.on_progress
  o.on_progress, o.journal = nil, nil -- one batch per round: progress is the step's
  local final, last, pending = {}, {}, {}
  for i, id in ipairs(ids) do pending[i] = id end
  local requests, rounds, done, ok_n = 0, 0, 0, 0
  while #pending > 0 do
    local now = sched.now()
    local left = deadline - (now - started)
    if left <= 0 then break end
    -- the first poll waits too: a reboot's order may take a moment to show
    sched.sleep(client.engine, math.min(interval, left))
    rounds = rounds + 1
    local rep, msg, err = poll(client, pending, o)
    if not rep then return nil, msg, err end
    requests = requests + rep.summary.requests
    local still = {}
    for _, row in ipairs(rep.rows) do
      local why = final_failure(row, phone)
      if row.status == "ok" and row.state == "running" then
        final[row.id] = row
        ok_n = ok_n + 1
      elseif why then
        row.status, row.message = "failed", why
        final[row.id] = row
      else
        last[row.id] = row
        still[#still + 1] = row.id
      end
      if final[row.id] then
        row.elapsed, row.polls = sched.now() - started, rounds
        done = done + 1
      end
    end
    pending = still
    if on_progress then
      on_progress { done = done, total = #ids, ok = ok_n, failed = done - ok_n, error = 0, timeout = 0 }
    end
  end
  for _, id in ipairs(pending) do
    local l = last[id] or {}
    final[id] = { id = id, [field] = id, status = "failed", state = l.state, vendor_status = l.vendor_status,
                  code = l.code, polls = rounds, elapsed = sched.now() - started,
                  message = ("not running after %gs (last: %s)"):format(deadline,
                    l.state or l.message or "no answer") }
  end
  local out = {}
  for i, id in ipairs(ids) do out[i] = final[id] end
  return report_mod.new { rows = out, elapsed = sched.now() - started, requests = requests }
end

--- Waits until each id runs again (after `restart`, `reboot`, `reset`,
-- `reset_phones`): polls the status of the ids not yet running every
-- `interval` seconds (the first time `interval` after the step starts) —
-- batch-query-status for instances, phone detail for phones. An id that
-- is not running at the `deadline`, or whose phone status is a failure
-- (-6 restart failed, -5 reset failed, ...), gets a `failed` row saying
-- why; a status query the vendor refuses (an unknown phone: 404) too.
-- @tparam[opt] table opts `deadline` (seconds per id from the step's start,
--   default 300), `interval` (seconds between polls, default 1), `name`,
--   `ids` (first step only; instance ids), batch options for the status queries (`concurrency`, `rate`, ...)
-- @treturn Workflow self
function Workflow:wait_running(opts)
  opts = opts or {}
  local deadline, interval = opts.deadline or 300, opts.interval or 1
  local ok, err = validate.seconds("deadline", deadline, true)
  if ok then ok, err = validate.seconds("interval", interval, true) end
  if not ok and not self.bad then self.bad = err end
  return self:_add("wait_running", nil, opts, function(client, ids, o, domain)
    return wait_running(client, ids, o, domain, deadline, interval)
  end, WAIT_RUNNING_OPTIONS):_input(opts.ids)
end

--- Checks that an app is installed: reads each instance's app list (every
-- page) and fails the rows whose app is absent or at another version. An
-- install the vendor reported as successful but that did not land drops
-- out here.
-- @tparam table spec `package` (the app's package name, e.g.
--   "com.example.app": `object_name` of the install), `version` (optional:
--   `object_version`), `name`, `ids` (first step only), and batch options
-- @treturn Workflow self
function Workflow:verify_installed(spec)
  spec = spec or {}
  local ok, err = validate.text("package", spec.package, validate.limits.name_chars, true)
  if ok then ok, err = validate.text("version", spec.version, validate.limits.name_chars, false) end
  if not ok and not self.bad then self.bad = err end
  local pkg, version = spec.package, spec.version
  return self:_add("verify_installed", "instance", spec, function(client, ids, o)
    local rep, msg, rerr = batch.apps(client, ids, o)
    if not rep then return nil, msg, rerr end
    for _, row in ipairs(rep.rows) do
      if row.status == "ok" then
        local found
        for _, a in ipairs(row.apps) do
          if a.app_pkg == pkg then found = a break end
        end
        row.apps = nil
        if not found then
          row.status, row.output, row.expectation = "failed", nil, true
          row.message = pkg .. " is not installed"
        elseif version and found.app_version ~= version then
          row.status, row.output, row.expectation = "failed", nil, true
          row.message = ("%s is at version %s, not %s"):format(pkg, tostring(found.app_version), version)
        else
          row.output = pkg .. " " .. tostring(found.app_version)
        end
      end
    end
    return report_mod.new { rows = rep.rows, elapsed = rep.summary.elapsed, requests = rep.summary.requests }
  end, VERIFY_OPTIONS):_input(spec.ids)
end

--- A custom step: `fn(client, ids, opts)` returns a report (or a list of
-- rows with `id` and `status`) covering `ids`.
-- @tparam string name
-- @tparam function fn
-- @tparam[opt] table opts `domain` ("phone" or "instance"; default: the
--   previous step's), `ids` (first step only), batch options passed to `fn`
-- @treturn Workflow self
function Workflow:step(name, fn, opts)
  opts = opts or {}
  local o = { name = name }
  for k, v in pairs(opts) do o[k] = v end
  return self:_add("step", opts.domain, o, fn):_input(opts.ids)
end

function Workflow:_input(ids)
  if ids ~= nil and #self.steps == 1 then self.ids = ids end
  return self
end

--- Runs the steps in order.
-- @treturn koophone.report.Report|nil one row per input id (`step`,
--   `dropped_at`); `summary.steps` lists `{name, total, ok}` per step
-- @treturn ?string message on failure (one line)
-- @treturn ?table err a validation error of a step (with `err.step`)
function Workflow:execute()
  local client = self.client
  local input = self.ids
  if self.bad then return errors.fail(self.bad) end
  if type(input) ~= "table" or #input == 0 then
    return errors.fail(errors.validation("ids", "the first step needs ids (a non-empty list)"))
  end
  local started = sched.now()
  local order, cur, final = {}, {}, {}
  local first_domain
  for _, s in ipairs(self.steps) do if s.domain then first_domain = s.domain break end end
  local domain = first_domain or "instance"
  local entries = {}
  for i, v in ipairs(input) do
    local id = type(v) == "table" and (v.phone_id or v.id) or v
    order[i] = id
    cur[id] = id
    entries[id] = v
  end
  local alive = {}
  for i, id in ipairs(order) do alive[i] = id end
  local requests, per_step = 0, {}
  local last_name
  for k, step in ipairs(self.steps) do
    if #alive == 0 then break end
    local sdomain = step.domain or domain
    -- ids in this step's domain
    local ids, back = {}, {}
    local still = {}
    for _, orig in ipairs(alive) do
      local id = cur[orig]
      if sdomain ~= domain then
        id = (sdomain == "instance" and self.to_instance or self.to_phone)(id)
      end
      if type(id) ~= "string" or id == "" then
        local row = rows_mod.from_error(orig, sdomain == "instance" and "instance_id" or "phone_id",
          errors.new { kind = "validation", message = ("no %s id for %s"):format(sdomain, cur[orig]) })
        row.step, row.dropped_at = step.name, step.name
        final[orig] = row
      elseif back[id] then
        local row = rows_mod.from_error(orig, "instance_id", errors.new { kind = "validation",
          message = ("maps to %s, as %s does"):format(id, back[id]) })
        row.step, row.dropped_at = step.name, step.name
        final[orig] = row
      else
        back[id] = orig
        cur[orig] = id
        ids[#ids + 1] = (k == 1 and (step.kind == "restart" or step.kind == "reset_phones") and entries[orig]) or id
        still[#still + 1] = orig
      end
    end
    domain = sdomain
    alive = still
    if #ids == 0 then break end
    local rep, msg, err = step.fn(client, ids, self:_batch_opts(step), sdomain)
    if not rep then
      -- a custom step may fail with `nil, message, err` or `nil, err`
      if not errors.is(err) then
        err = errors.is(msg) and msg or errors.new { kind = "step", message = tostring(msg or err) }
      end
      err.step = step.name
      return errors.fail(err)
    end
    local list = rep.rows or rep
    if rep.summary then requests = requests + (rep.summary.requests or 0) end
    local by_id = {}
    for _, row in ipairs(list) do by_id[row.id] = row end
    local next_alive, ok_n = {}, 0
    for _, orig in ipairs(alive) do
      local row = by_id[cur[orig]] or rows_mod.from_error(cur[orig], "instance_id",
        errors.new { kind = "protocol", message = "the step returned no row for this id" })
      local copy = {}
      for f, v in pairs(row) do copy[f] = v end
      if copy.id ~= orig then copy.step_id = copy.id end
      copy.id = orig
      copy.step = step.name
      if copy.status == "ok" then
        ok_n = ok_n + 1
        next_alive[#next_alive + 1] = orig
        if step.kind ~= "wait" then final[orig] = copy end
      else
        copy.dropped_at = step.name
        final[orig] = copy
      end
    end
    per_step[#per_step + 1] = { name = step.name, total = #alive, ok = ok_n }
    alive = next_alive
    last_name = step.name
  end
  local out = {}
  for i, orig in ipairs(order) do
    local row = final[orig]
    if not row then
      row = { id = orig, status = "ok", step = last_name }
    end
    out[i] = row
  end
  local rep = report_mod.new { rows = out, elapsed = sched.now() - started, requests = requests }
  rep.summary.steps = per_step
  return rep
end

return M
