--- fuzz/driver.lua: feeds one response (status + decoded body, or a decode
-- failure) through koophone's response path without HTTP, and checks that it
-- ends as result rows or a structured error.
--
-- The client's transport keeps its own classification (`_classify`: status,
-- decode errors, vendor error fields) and only the network is stubbed: every
-- request the client makes gets the fuzzed response. Each input is mapped by
-- sync_command, async_command (+ one task poll), install_app (+ poll),
-- restart_phones (+ poll through ListJobs), query_task, job and jobs.
--
--     local driver = require "fuzz.driver"
--     local d = driver.new()
--     d:feed(status, body, raw, decode_error)  -- raises on a finding
--     d.decode                                 -- koophone's private cjson decode
local koophone = require "koophone"
local errors = require "koophone.errors"

local M = {}
local D = {}
D.__index = D

local STATUSES = { ok = true, failed = true, error = true, timeout = true, running = true }
local MAX_CALLS = 64 -- requests one input may cause (paging); more is a finding

local IDS = { "a44uhlf7", "efjy72gs", "kp000001" }
local PHONES = { "ph000001", "1678567b8bab40f93711234cb80d0764" }

local function finding(kind, msg) error({ finding = kind, message = msg }, 0) end

local function check_err(what, err)
  if not errors.is(err) then finding("unstructured", what .. ": error is not a koophone error: " .. tostring(err)) end
  local s = tostring(err)
  if type(s) ~= "string" or s == "" or s:find("\n") then finding("tostring", what .. ": bad tostring " .. tostring(s)) end
  if type(err.kind) ~= "string" then finding("kind", what .. ": no kind") end
end

local function check_row(what, row)
  if type(row) ~= "table" then finding("row", what .. ": row is not a table") end
  if type(row.id) ~= "string" then finding("row", what .. ": row without a string id") end
  if not STATUSES[row.status] then finding("row", what .. ": bad status " .. tostring(row.status)) end
  for _, k in ipairs { "output", "code", "message", "job_id" } do
    local v = row[k]
    if v ~= nil and type(v) ~= "string" then finding("row", what .. ": row." .. k .. " is a " .. type(v)) end
  end
end

-- rows must list every id given, once, in order
local function check_rows(what, rows, ids)
  if type(rows) ~= "table" then finding("rows", what .. ": rows not a table") end
  for _, row in ipairs(rows) do check_row(what, row) end
  if ids then
    if #rows ~= #ids then finding("rows", ("%s: %d rows for %d ids"):format(what, #rows, #ids)) end
    for i, id in ipairs(ids) do
      if rows[i].id ~= id then finding("rows", what .. ": row " .. i .. " is " .. tostring(rows[i].id)) end
    end
  end
end

function M.new()
  local self = setmetatable({}, D)
  self.client = assert(koophone.new { token = "fuzz-token-secret", endpoint = "http://127.0.0.1:9",
    cph_endpoint = "http://127.0.0.1:9", project_id = "fuzzproject", retries = 0, poll_interval = 0.001 })
  local t = self.client.transport
  local driver = self
  -- the network, stubbed: the transport's own classification stays
  t.request = function(tr, spec)
    driver.calls = driver.calls + 1
    if driver.calls > MAX_CALLS then finding("loop", "more than " .. MAX_CALLS .. " requests for one response") end
    local method = spec.method or (spec.json and "POST" or "GET")
    local r = driver.response
    local res = { status = r.status, body = r.body, raw = r.raw, decode_error = r.decode_error,
                  request_id = r.request_id, retry_after = r.retry_after }
    local err = tr:_classify(res, nil, method)
    if err then
      err.request_id = err.request_id or "fuzz-request"
      err.attempts = 1
      return nil, err
    end
    res.attempts, res.request_id, res.elapsed = 1, res.request_id or "fuzz-request", 0
    return res
  end
  self.decode = debug.getuservalue(self.client.engine)[2].decode
  self.stats = { inputs = 0, rows = 0, errors = 0, by_kind = {} }
  return self
end

-- `a, msg, b`: a public call's returns (`nil, message, err` on failure)
function D:_outcome(what, ok, a, msg, b)
  if not ok then
    if type(a) == "table" and a.finding then error(a, 0) end
    finding("lua_error", what .. ": uncaught Lua error: " .. tostring(a))
  end
  if a == nil then
    check_err(what, b)
    if type(msg) ~= "string" or msg ~= tostring(b) or msg:find("\n") then
      finding("unstructured", what .. ": the message is not one line equal to tostring(err): " .. tostring(msg))
    end
    self.stats.errors = self.stats.errors + 1
    self.stats.by_kind[b.kind] = (self.stats.by_kind[b.kind] or 0) + 1
  else
    self.stats.rows = self.stats.rows + 1
  end
end

local function poll_task(task)
  task.next_due = -math.huge
  local done, rows = task:poll()
  if task.query then -- the stub never waits: the query must have ended
    finding("task", "task query did not finish")
  end
  return done, rows
end

--- Maps one response through every endpoint. Raises `{finding=, message=}`.
-- @param status HTTP status
-- @param body the decoded body (any Lua value) or nil
-- @param raw the raw text (when not JSON)
-- @param decode_error cjson's message
function D:feed(status, body, raw, decode_error)
  self.response = { status = status, body = body, raw = raw, decode_error = decode_error }
  self.stats.inputs = self.stats.inputs + 1
  local c = self.client
  local ok, a, msg, b
  self.calls = 0
  ok, a, msg, b = pcall(c.sync_command, c, "echo fuzz", IDS)
  self:_outcome("sync_command", ok, a, msg, b)
  if ok and a then check_rows("sync_command", a, IDS) end

  for _, kind in ipairs { "async", "install" } do
    self.calls = 0
    if kind == "async" then
      ok, a, msg, b = pcall(c.async_command, c, "echo fuzz", IDS)
    else
      ok, a, msg, b = pcall(c.install_app, c, { object_name = "o", file_name = "f.apk", object_version = "1",
        object_size = 1, install_package_url = "https://x/a.apk?Signature=S" }, IDS)
    end
    self:_outcome(kind, ok, a, msg, b)
    if ok and a then
      local task = a
      check_rows(kind .. " task", task:results(), IDS)
      local pok, done, rows = pcall(poll_task, task)
      if not pok then
        if type(done) == "table" and done.finding then error(done, 0) end
        finding("lua_error", kind .. " task poll: " .. tostring(done))
      end
      check_rows(kind .. " task poll", rows, IDS)
      local cnt = task:counts()
      if cnt.total ~= #IDS then finding("task", kind .. ": counts total") end
      if done then
        local wok, wrows, _, werr = pcall(task.wait, task, { timeout = 0 })
        if not wok then finding("lua_error", kind .. " wait: " .. tostring(wrows)) end
        if wrows then check_rows(kind .. " wait", wrows, IDS) else check_err(kind .. " wait", werr) end
      end
    end
  end

  self.calls = 0
  ok, a, msg, b = pcall(c.restart_phones, c, { PHONES[1], { phone_id = PHONES[2], property = { wifi = "x" } } })
  self:_outcome("restart", ok, a, msg, b)
  if ok and a then
    check_rows("restart task", a:results(), PHONES)
    self.calls = 0
    local pok, _, rows = pcall(poll_task, a)
    if not pok then
      if type(_) == "table" and _.finding then error(_, 0) end
      finding("lua_error", "restart poll: " .. tostring(_))
    end
    check_rows("restart poll", rows, PHONES)
  end

  self.calls = 0
  ok, a, msg, b = pcall(c.query_task, c, "task-1")
  self:_outcome("query_task", ok, a, msg, b)
  if ok and a then check_rows("query_task", a) end

  self.calls = 0
  ok, a, msg, b = pcall(c.job, c, "job-1")
  self:_outcome("job", ok, a, msg, b)
  if ok and a then check_row("job", a) end

  self.calls = 0
  ok, a, msg, b = pcall(c.jobs, c, { request_id = "req-1", limit = 2 })
  self:_outcome("jobs", ok, a, msg, b)
  if ok and a then check_rows("jobs", a) end

  -- a task attached by id alone discovers its jobs from the answer
  self.calls = 0
  local t = c:task("task-2")
  local pok, _, rows = pcall(poll_task, t)
  if not pok then
    if type(_) == "table" and _.finding then error(_, 0) end
    finding("lua_error", "attached task poll: " .. tostring(_))
  end
  check_rows("attached task", rows)
end

--- Decodes `text` with koophone's private cjson (as engine:perform does)
-- and feeds the result.
function D:feed_text(status, text)
  if text == "" then return self:feed(status, nil, nil, nil) end
  local ok, v = pcall(self.decode, text)
  if ok then return self:feed(status, v) end
  return self:feed(status, nil, text, tostring(v))
end

return M
