--- Reports: what a batch (or a workflow) returns.
--
--     local report = assert(batch.run(client, "getprop ro.product.model", ids))
--     print(report)                       -- one-line summary
--     for _, row in ipairs(report:failed()) do print(row.id, row.status, row.message) end
--     io.write(report:to_csv())           -- or to_json(), to_table()
--     local again = report:retry_failed() -- only the ids that were not ok
--
-- `report.rows` holds one row per input id, in input order, every id exactly
-- once (see `koophone.rows` for the row shape); `report.summary` is
-- `{total, ok, failed, error, timeout, elapsed, requests}`.
-- @module koophone.report
local cjson = require("cjson").new()
local rows_mod = require "koophone.rows"

local M = {}

-- The Report type (below).
local Report = {}
Report.__index = Report
M.Report = Report

local STATUSES = { "ok", "failed", "error", "timeout", "running" }

--- Counts rows by status (`koophone.rows.count`).
-- @tparam {table,...} list rows
-- @treturn table `{total, done, ok, failed, error, timeout, running}`
M.count = rows_mod.count

--- Builds a report.
-- @tparam table t `rows` (one per id, in input order), `elapsed`
--   (seconds), `requests` (HTTP calls made), `operation` (what ran, for
--   `retry_failed`: `{kind=, command=, app=, image_id=, mode=}`), `client`,
--   `opts` (the batch's options, reused by `retry_failed`)
-- @treturn Report
function M.new(t)
  local self = setmetatable({
    rows = t.rows or {}, operation = t.operation, client = t.client, opts = t.opts,
  }, Report)
  local s = M.count(self.rows)
  s.running, s.done = nil, nil
  s.elapsed = t.elapsed or 0
  s.requests = t.requests or 0
  self.summary = s
  return self
end

--- The Report type.
-- @type Report

--- The rows whose status is not "ok", in input order.
-- @treturn {table,...}
function Report:failed()
  local out = {}
  for _, row in ipairs(self.rows) do
    if row.status ~= "ok" then out[#out + 1] = row end
  end
  return out
end

--- The row of one id.
-- @tparam string id
-- @treturn ?table row
function Report:row(id)
  if not self.by_id then
    self.by_id = {}
    for _, row in ipairs(self.rows) do self.by_id[row.id] = row end
  end
  return self.by_id[id]
end

--- True when every row is ok.
-- @treturn boolean
function Report:all_ok()
  return self.summary.ok == self.summary.total
end

--- A new report: this one's rows, each replaced by `other`'s row for the
-- same id when `other` has one (e.g. the report of `retry_failed`). Rows
-- keep this report's order; summary counts are recomputed, `elapsed` and
-- `requests` add up.
-- @tparam Report other
-- @treturn Report
function Report:merge(other)
  local by_id = {}
  for _, row in ipairs(other.rows) do by_id[row.id] = row end
  local rows = {}
  for i, row in ipairs(self.rows) do rows[i] = by_id[row.id] or row end
  return M.new { rows = rows, operation = self.operation, client = self.client, opts = self.opts,
                 elapsed = self.summary.elapsed + other.summary.elapsed,
                 requests = self.summary.requests + other.summary.requests }
end

--- Runs the same operation again on the ids whose row is not ok.
--
-- Rows whose command may have run already (`row.maybe_executed`: a reply
-- lost after sending, a job still running at a timeout) are skipped unless
-- `opts.include_maybe_executed` is true: running them again is the
-- caller's decision. Pass `opts.statuses = {"failed"}` to retry only what
-- the vendor reported as failed.
-- @tparam[opt] table client defaults to the client that made this report
-- @tparam[opt] table opts batch options (default: this batch's options);
--   plus `statuses` (list of statuses to retry, default every non-ok one)
--   and `merge` (return `self:merge(new)` instead of the new report),
--   `include_maybe_executed`
-- @treturn Report|nil the report of the ids retried (or the merged one);
--   a report with no rows when nothing needed a retry
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure
function Report:retry_failed(client, opts)
  client = client or self.client
  local op = self.operation
  if not client or not op then
    local errors = require "koophone.errors"
    return errors.fail(errors.validation("client", "is required: this report has no operation to retry"))
  end
  opts = opts or {}
  local base = {}
  for k, v in pairs(self.opts or {}) do base[k] = v end
  for k, v in pairs(opts) do base[k] = v end
  base.journal = opts.journal -- never append to the first batch's journal
  -- this method's own options, and a resume's
  base.statuses, base.merge, base.submit_missing, base.app = nil, nil, nil, nil
  base.include_maybe_executed = nil
  local want
  if opts.statuses then
    want = {}
    for _, s in ipairs(opts.statuses) do want[s] = true end
  end
  local ids = {}
  for _, row in ipairs(self.rows) do
    -- a row whose command may have run is not run again unless asked:
    -- retrying it could run the command twice
    if row.status ~= "ok" and (not want or want[row.status])
        and (not row.maybe_executed or opts.include_maybe_executed) then
      ids[#ids + 1] = (op.items and op.items[row.id]) or row.id
    end
  end
  local new
  if #ids == 0 then
    new = M.new { rows = {}, operation = op, client = client, opts = base }
  else
    local batch = require "koophone.batch"
    local msg, err
    new, msg, err = batch.operation(client, op, ids, base)
    if not new then return nil, msg, err end
  end
  if opts.merge then return self:merge(new) end
  return new
end

--- A row with its plain values only (strings, numbers, booleans): what
-- JSON output shows.
-- @tparam table row
-- @treturn table
local function plain(row)
  local out = {}
  for k, v in pairs(row) do
    local t = type(v)
    if t == "string" or t == "number" or t == "boolean" then out[k] = v end
  end
  return out
end
M.plain = plain

--- The report as JSON: `{"summary": {...}, "rows": [...]}`.
-- @treturn string
function Report:to_json()
  local list = {}
  for i, row in ipairs(self.rows) do list[i] = plain(row) end
  local s = plain(self.summary)
  local body = cjson.encode { summary = s, rows = #list > 0 and list or cjson.empty_array or {} }
  return body
end

--- The CSV columns, in order.
M.columns = { "id", "status", "vendor_status", "code", "message", "output", "job_id", "task_id",
              "request_id", "step", "dropped_at", "attempts", "elapsed" }

local function csv_field(v)
  if v == nil then return "" end
  if type(v) == "number" then
    if v % 1 ~= 0 then return ("%.3f"):format(v) end
    return tostring(math.tointeger and math.tointeger(v) or ("%d"):format(v))
  end
  local s = tostring(v)
  if s:find('[,"\r\n]') or s:match("^%s") or s:match("%s$") then
    s = '"' .. s:gsub('"', '""') .. '"'
  end
  return s
end
M.csv_field = csv_field

--- The report as CSV (RFC 4180): a header line, then one line per row.
-- @tparam[opt] {string,...} columns default `report.columns`
-- @treturn string
function Report:to_csv(columns)
  columns = columns or M.columns
  local lines = { table.concat(columns, ",") }
  for _, row in ipairs(self.rows) do
    local f = {}
    for i, c in ipairs(columns) do f[i] = csv_field(row[c]) end
    lines[#lines + 1] = table.concat(f, ",")
  end
  return table.concat(lines, "\r\n") .. "\r\n"
end

--- One cell of a text table: control characters as spaces, cut to
-- `width` with "..." (not padded).
-- @param v
-- @tparam integer width
-- @treturn string
local function cell(v, width)
  if v == nil then return "" end
  local s = tostring(v):gsub("[%c]+", " ")
  if #s > width then s = s:sub(1, width - 3) .. "..." end
  return s
end
M.cell = cell

--- The rows as a human-readable text table (long cells are cut).
-- @tparam[opt] {table,...} list rows to show (default every row)
-- @tparam[opt] table opts `columns` (default id, status, code, message,
--   output; with "step" and "dropped_at" when rows have them), `width`
--   (max characters per cell, default 40)
-- @treturn string
function Report:to_table(list, opts)
  list = list or self.rows
  opts = opts or {}
  local width = opts.width or 40
  local columns = opts.columns
  if not columns then
    columns = { "id", "status", "code", "message", "output" }
    for _, row in ipairs(list) do
      if row.dropped_at or row.step then columns = { "id", "status", "step", "dropped_at", "code", "message", "output" } break end
    end
  end
  local grid = { columns }
  for _, row in ipairs(list) do
    local line = {}
    for i, c in ipairs(columns) do line[i] = cell(row[c], width) end
    grid[#grid + 1] = line
  end
  local w = {}
  for _, line in ipairs(grid) do
    for i, s in ipairs(line) do w[i] = math.max(w[i] or 0, #s) end
  end
  local out = {}
  for n, line in ipairs(grid) do
    local parts = {}
    for i, s in ipairs(line) do parts[i] = s .. string.rep(" ", w[i] - #s) end
    out[#out + 1] = (table.concat(parts, "  "):gsub("%s+$", ""))
    if n == 1 then
      local sep = {}
      for i = 1, #columns do sep[i] = string.rep("-", w[i]) end
      out[#out + 1] = table.concat(sep, "  ")
    end
  end
  return table.concat(out, "\n") .. "\n"
end

--- One line: `N ids: a ok, b failed, c error, d timeout in Xs (R requests)`.
-- @treturn string
function Report:__tostring()
  local s = self.summary
  return ("%d ids: %d ok, %d failed, %d error, %d timeout in %.1fs (%d requests)"):format(
    s.total, s.ok, s.failed, s.error, s.timeout, s.elapsed, s.requests)
end

M.STATUSES = STATUSES

return M
