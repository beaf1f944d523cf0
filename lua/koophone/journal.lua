--- Journals: a batch's progress as JSON lines, so that `batch.resume` can
-- follow its tasks again after a crash or Ctrl-C without submitting
-- anything twice.
--
-- One JSON object per line, flushed as soon as written:
--
-- * `{"type":"batch", "version":1, "operation":{...}, "ids":[...], "chunks":[[first,last],...]}`
--   the whole batch, written before anything is sent (`operation.app` has
--   its `install_package_url` scrubbed of its query string);
-- * `{"type":"submit", "chunk":i}` just before chunk i's request is sent;
-- * `{"type":"task", "chunk":i, "task":{kind,id,jobs,ids}, "initial":{id=row}}`
--   once the vendor accepted it, before it is polled (`initial` holds the
--   rows already final in the reply, e.g. per-phone restart errors);
-- * `{"type":"rows", "chunk":i, "rows":[...]}` when the chunk's rows are
--   final (a sync reply, a finished task, a failed submit);
-- * `{"type":"end", "summary":{...}}` when the batch is over.
--
-- Journals never hold the token, and messages are scrubbed of URL query
-- strings. A truncated last line (a crash in the middle of a write) is ignored.
-- @module koophone.journal
local cjson = require("cjson").new()
local errors = require "koophone.errors"
local core = require "koophone.core"

local M = {}
M.VERSION = 1

-- An open journal (the Journal type, below).
local Journal = {}
Journal.__index = Journal

--- Opens (creates or appends to) a journal file.
-- @tparam string path
-- @tparam[opt] table opts `secrets` (strings to scrub from every line)
-- @treturn Journal|nil
-- @treturn ?table err (kind "io")
function M.open(path, opts)
  if type(path) ~= "string" or path == "" then
    return nil, errors.validation("journal", "must be a file path")
  end
  -- private (mode 0600) when created, and a torn last line cut off: a
  -- record appended after it would be glued to it and both lost
  local cut, perr = core.journal_prepare(path)
  if not cut then return nil, errors.new { kind = "io", field = "journal", message = perr } end
  local f, msg = io.open(path, "a")
  if not f then return nil, errors.new { kind = "io", field = "journal", message = "cannot open journal: " .. tostring(msg) } end
  f:setvbuf("no")
  return setmetatable({ path = path, file = f, secrets = opts and opts.secrets }, Journal)
end

local function scrub_tree(v, secrets, depth)
  local t = type(v)
  if t == "string" then
    local out = errors.scrub(v, secrets):gsub("<redacted><redacted>", "<redacted>")
    return out
  end
  if t ~= "table" or depth > 6 then
    if t == "number" or t == "boolean" then return v end
    return nil
  end
  local out = {}
  for k, x in pairs(v) do
    if type(k) == "string" or type(k) == "number" then out[k] = scrub_tree(x, secrets, depth + 1) end
  end
  return out
end

--- An open journal.
-- @type Journal

--- Appends one record (a table) as a JSON line and flushes it.
-- @tparam table record
-- @treturn boolean|nil
-- @treturn ?table err
function Journal:write(record)
  if not self.file then return nil, errors.new { kind = "io", message = "journal is closed" } end
  local ok, line = pcall(cjson.encode, scrub_tree(record, self.secrets, 0))
  if not ok then return nil, errors.new { kind = "io", message = "cannot encode journal record: " .. tostring(line) } end
  -- one write per record: a crash leaves a whole record or a torn last
  -- line (cut at the next open), never two records glued together
  local w, msg = self.file:write(line .. "\n")
  if not w then return nil, errors.new { kind = "io", message = "cannot write journal: " .. tostring(msg) } end
  self.file:flush()
  return true
end

--- Closes the file.
function Journal:close()
  if self.file then self.file:close() end
  self.file = nil
end

--- Reading journals and storing installs.
-- @section reading

--- A copy of an install description safe to store: the package URL's
-- query string (pre-signed credentials) is replaced by `<redacted>`.
-- @tparam table app
-- @treturn table
function M.scrub_app(app)
  local out = {}
  for k, v in pairs(app) do
    out[k] = type(v) == "string" and errors.scrub(v) or v
  end
  return out
end

--- Reads every complete record of a journal.
-- @tparam string path
-- @treturn {table,...}|nil records, in file order
-- @treturn ?table err
function M.read(path)
  local f, msg = io.open(path, "r")
  if not f then return nil, errors.new { kind = "io", field = "journal", message = "cannot read journal: " .. tostring(msg) } end
  local out = {}
  for line in f:lines() do
    if line:match("%S") then
      local ok, rec = pcall(cjson.decode, line)
      if ok and type(rec) == "table" then out[#out + 1] = rec end
    end
  end
  f:close()
  return out
end

local function strip_nulls(v)
  if v == cjson.null then return nil end
  if type(v) ~= "table" then return v end
  for k, x in pairs(v) do v[k] = strip_nulls(x) end
  return v
end

--- Reads a journal into the state of its batch.
-- @tparam string path
-- @treturn table|nil `{operation=, ids=, chunks={{first=, last=, submitted=,
--   task=, initial=, rows=}, ...}, ended=summary|nil}`
-- @treturn ?table err
function M.load(path)
  local records, err = M.read(path)
  if not records then return nil, err end
  local head = records[1]
  if not head or head.type ~= "batch" then
    return nil, errors.new { kind = "validation", field = "journal",
                             message = "journal " .. path .. " does not start with a batch record" }
  end
  if tonumber(head.version) ~= M.VERSION then
    return nil, errors.new { kind = "validation", field = "journal",
                             message = "journal version " .. tostring(head.version) .. " is not supported" }
  end
  strip_nulls(head)
  local state = { operation = head.operation, ids = head.ids, items = head.items, chunks = {}, opts = head.opts }
  for i, c in ipairs(head.chunks or {}) do state.chunks[i] = { first = c[1], last = c[2] } end
  for n = 2, #records do
    local r = strip_nulls(records[n])
    local c = r.chunk and state.chunks[r.chunk]
    if r.type == "submit" and c then
      c.submitted = true
    elseif r.type == "task" and c then
      c.submitted = true
      c.task = r.task
      c.initial = r.initial
    elseif r.type == "rows" and c then
      c.submitted = true
      c.rows = r.rows
    elseif r.type == "end" then
      state.ended = r.summary
    end
  end
  return state
end

return M
