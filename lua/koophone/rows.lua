--- Result rows: one per instance or phone, whatever produced it.
--
--     { id = "kp000001", instance_id = "kp000001",   -- or phone_id for CPH rows
--       status = "ok" | "failed" | "error" | "timeout" | "running",
--       vendor_status = 2, output = "...", code = "CPS.0191", message = "...",
--       job_id = "...", task_id = "...", request_id = "...",
--       attempts = 1, elapsed = 0.42 }
--
-- `failed` means the vendor ran the job and said -1 (or 3, app install
-- tasks in the SDK era); `error` means we could not learn the outcome (the
-- request failed, or the reply had no entry). `running` means not finished
-- yet: `vendor_status` 1 (running) or 0 (not run yet: install tasks since
-- the vendor's SDK 3.1.207 start their jobs at 0; `docs/vendor.md`).
-- @module koophone.rows
local core = require "koophone.core"

local new_row = core.row
local M = {}

--- JSON null and "" become nil; everything else becomes a string.
-- @param v
-- @treturn ?string
function M.text(v)
  local t = type(v)
  if t == "string" then if v == "" then return nil end return v end
  if t == "number" and v % 1 == 0 and v > -2^53 and v < 2^53 then return ("%d"):format(v) end
  if t == "number" or t == "boolean" then return tostring(v) end
  return nil -- nil, JSON null, tables
end

--- True for the envelope codes that mean success: `"0"`, `0` (lua-cjson
-- gives `0.0` on Lua 5.3+), `""`, JSON null, or no code at all.
-- @param code
-- @treturn boolean
function M.success_code(code)
  return code == nil or code == "0" or code == 0 or code == "" or
    (type(code) == "userdata" and code == core.null)
end

--- Maps the vendor's job status (as number or string): 2 success -> `ok`;
-- -1 and 3 failed -> `failed`; 1 running and 0 not run yet -> `running`
-- (a task is not finished while a job is 0 or 1); anything else `error`.
-- The seed pages know 1, 2, -1; the SDK's JobDetail adds 0 and 3, used by
-- app install tasks (`docs/vendor.md`).
-- @param v
-- @treturn string status, ?number vendor_status
function M.status(v)
  local n = v
  if type(v) ~= "number" then n = tonumber(v) end
  if n == 2 then return "ok", 2 end
  if n == -1 then return "failed", -1 end
  if n == 1 then return "running", 1 end
  if n == 0 then return "running", 0 end
  if n == 3 then return "failed", 3 end
  return "error", n
end

--- A row from a vendor item (CmdResult, JobDetail, CPH job).
-- @tparam string id the instance or phone
-- @tparam string id_field "instance_id" or "phone_id"
-- @tparam table item the vendor's object
-- @tparam[opt] table extra `task_id`, `request_id`, `attempts`, `elapsed`, `polls`
-- @treturn table row
function M.from_item(id, id_field, item, extra)
  -- the hot path of every reply: the usual values are tested inline
  local st = item.status
  local status, vendor_status
  if st == 2 then status, vendor_status = "ok", 2
  elseif st == -1 then status, vendor_status = "failed", -1
  else status, vendor_status = M.status(st) end
  local out, code, msg, job = item.execute_msg, item.error_code, item.error_msg, item.job_id
  if out == "" then out = nil elseif type(out) ~= "string" then out = M.text(out) end
  if code == "" then code = nil elseif type(code) ~= "string" then code = M.text(code) end
  if msg == "" then msg = nil elseif type(msg) ~= "string" then msg = M.text(msg) end
  if job == "" then job = nil elseif job ~= nil and type(job) ~= "string" then job = M.text(job) end
  if status == "error" and not msg then msg = "unexpected job status " .. tostring(st) end
  -- sized for the fields present only (a constructor naming all 13 would
  -- take 16 slots for a row of 8)
  if extra then
    return new_row(id, id_field, status, vendor_status, out, code, msg, job, extra.task_id,
                   extra.request_id, extra.attempts, extra.elapsed, extra.polls)
  end
  return new_row(id, id_field, status, vendor_status, out, code, msg, job)
end

--- The rows of a reply that answers each id with one item (sync-command's
-- `cmd_results`), matched by `instance_id`, in the order of `ids`; an id
-- the reply does not answer gets an "error" row. The general path: the
-- client tries `core.item_rows` (the usual reply, in C) first.
-- @tparam {string,...} ids
-- @tparam table results the reply's items
-- @tparam table res the response (`request_id`, `attempts`, `elapsed`)
-- @treturn {table,...} rows
function M.from_results(ids, results, res)
  local by_id = {}
  for _, item in ipairs(results) do
    if type(item) == "table" and item.instance_id ~= nil then by_id[tostring(item.instance_id)] = item end
  end
  local out = {}
  local extra = { request_id = res.request_id, attempts = res.attempts, elapsed = res.elapsed }
  for i, id in ipairs(ids) do
    local item = by_id[id]
    if item then
      out[i] = M.from_item(id, "instance_id", item, extra)
    else
      out[i] = M.from_error(id, "instance_id", require("koophone.errors").new {
        kind = "protocol", message = "the reply has no result for this instance",
        request_id = res.request_id, attempts = res.attempts }, extra)
    end
  end
  return out
end

--- Completes rows built from a reply's bytes (sync-command's usual reply:
-- `res.rows`, see src/cmd_rows.c) with what is known only once the call has
-- ended: each row gets `request_id`, `attempts` and `elapsed` (their slots
-- were reserved), the list `request_id` and `attempts`. Then they are the
-- rows `from_item` builds. (Set here rather than in C: the VM's field
-- stores are cheaper than the C API's.)
-- @tparam {table,...} list rows
-- @tparam table res the response (`request_id`, `attempts`, `elapsed`)
-- @treturn {table,...} list
function M.finish(list, res)
  local request_id, attempts, elapsed = res.request_id, res.attempts, res.elapsed
  for i = 1, #list do
    local row = list[i]
    row.request_id, row.attempts, row.elapsed = request_id, attempts, elapsed
  end
  list.request_id, list.attempts = request_id, attempts
  return list
end

--- A row for an id whose outcome is unknown because of `err`.
-- @tparam string id
-- @tparam string id_field
-- @tparam table err a koophone error
-- @tparam[opt] table extra
-- @treturn table row
function M.from_error(id, id_field, err, extra)
  local row = { id = id, [id_field] = id, status = err.kind == "timeout" and "timeout" or "error",
                code = err.code, message = err.message, kind = err.kind,
                http_status = err.http_status, request_id = err.request_id,
                attempts = err.attempts, maybe_executed = err.maybe_executed }
  if extra then for k, v in pairs(extra) do if row[k] == nil then row[k] = v end end end
  return row
end

--- Counts rows by status — the one count behind reports, tasks, batch
-- progress and the CLI. With `c`, adds to it.
-- @tparam {table,...} list rows
-- @tparam[opt] table c counts to add to
-- @treturn table `{total, done, ok, failed, error, timeout, running}`
--   (`done`: every row not running)
function M.count(list, c)
  c = c or { total = 0, done = 0, ok = 0, failed = 0, error = 0, timeout = 0, running = 0 }
  local n = #list
  c.total = c.total + n
  for i = 1, n do
    local s = list[i].status
    c[s] = (c[s] or 0) + 1
  end
  c.done = c.total - c.running
  return c
end

return M
