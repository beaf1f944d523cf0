-- Fault injection: the active fault list (shared dict, cached per worker),
-- choosing the fault for a request, and corrupting/replacing responses.
local util = require "koophone_emulator.util"

local ngx = ngx
local F = ngx.shared.kp_faults
local C = ngx.shared.kp_counters

local M = {}

M.kinds = {
  ["500"] = "before", ["503"] = "before", ["429"] = "before",
  reset = "after", stall = "after", truncate = "after", malformed = "after",
  missing = "after", wrong_types = "after", slow_body = "after",
  numeric_code = "after", -- error_code "0" sent as the number 0 (valid, as some services do)
}

-- normalise and validate one fault; returns fault or nil, err
local function normalise(f)
  if type(f) ~= "table" or not util.is_object(f) then return nil, "a fault must be an object" end
  local kind = f.kind ~= nil and tostring(f.kind) or nil
  if not kind or not M.kinds[kind] then return nil, "fault kind must be one of 500, 503, 429, reset, stall, truncate, malformed, missing, wrong_types, slow_body, numeric_code" end
  local ep = f.endpoint or "*"
  if ep ~= "*" and not util.endpoint_set[ep] then return nil, "unknown fault endpoint: " .. tostring(ep) end
  local g = { kind = kind, endpoint = ep }
  for _, k in ipairs { "probability", "every", "count", "retry_after", "seconds" } do
    if f[k] ~= nil then
      g[k] = tonumber(f[k])
      if not g[k] or g[k] < 0 then return nil, "fault " .. k .. " must be a non-negative number" end
    end
  end
  if g.every and g.every < 1 then return nil, "fault every must be >= 1" end
  if not g.probability and not g.every then g.probability = 1 end
  g.retry_after = g.retry_after or 1
  g.seconds = g.seconds or 2
  g.when = f.when or M.kinds[kind]
  if g.when ~= "before" and g.when ~= "after" then return nil, "fault when must be before or after" end
  return g
end

M.validate = normalise

local function store(list)
  F:set("list", util.encode(list))
  F:incr("version", 1, 0)
end

-- replace the active list (list of raw faults); returns list or nil, err
function M.install(raw)
  local list = {}
  for i, f in ipairs(raw or {}) do
    local g, err = normalise(f)
    if not g then return nil, "faults[" .. i .. "]: " .. err end
    g.id = F:incr("next_id", 1, 0)
    list[#list + 1] = g
  end
  store(list)
  return list
end

function M.add(raw)
  local items = util.is_array(raw) and next(raw) ~= nil and raw or { raw }
  local list = util.decode(F:get("list") or "[]") or {}
  local added = {}
  for i, f in ipairs(items) do
    local g, err = normalise(f)
    if not g then return nil, "fault " .. i .. ": " .. err end
    added[#added + 1] = g
  end
  for _, g in ipairs(added) do
    g.id = F:incr("next_id", 1, 0)
    list[#list + 1] = g
  end
  store(list)
  return added
end

function M.clear() store({}) end

function M.list()
  local list = util.decode(F:get("list") or "[]") or {}
  for _, g in ipairs(list) do g.fired = C:get("ff:" .. g.id) or 0 end
  return list
end

local cached, cached_ver = {}, nil
local function active()
  local v = F:get("version")
  if v ~= cached_ver then
    cached = util.decode(F:get("list") or "[]") or {}
    cached_ver = v
  end
  return cached
end

-- the fault that fires for this request, if any
function M.pick(cfg, ep, seq, total)
  local list = active()
  if #list == 0 then return nil end
  for i = 1, #list do
    local f = list[i]
    if f.endpoint == ep or f.endpoint == "*" then
      local n = f.endpoint == "*" and total or seq
      local fires
      if f.every then
        fires = n % f.every == 0
      else
        fires = f.probability >= 1 or util.fraction(cfg.seed, "fault", f.id, n) < f.probability
      end
      if fires then
        local key = "ff:" .. f.id
        if not f.count or (C:get(key) or 0) < f.count then
          C:incr(key, 1, 0)
          return f
        end
      end
    end
  end
  return nil
end

local function error_body(fam, status, msg)
  if fam == "iam" then
    local titles = { [500] = "Internal Server Error", [503] = "Service Unavailable", [429] = "Too Many Requests" }
    return util.iam_err(status, msg, titles[status])
  elseif status == 429 then
    return util.err("APIGW.0308", "The throttling threshold has been reached.")
  elseif fam == "cph" then
    return util.err("CPS.9999", msg)
  end
  return util.err("KOOPHONE.API.9999", msg)
end

local MSGS = { [500] = "Internal service error.", [503] = "Service unavailable.", [429] = "Too many requests." }

local function close_connection()
  return ngx.exit(444)
end

-- remove the required field
local REMOVE = {
  ["sync-command"] = "data", ["async-command"] = "data", task = "data", install = "data",
  restart = "jobs", jobs = "jobs", job = "status", token = "token",
  reboot = "data", reset = "data", backup = "data", status = "data", instances = "data", apps = "data",
  phone = "status", phones = "phones", ["phone-reset"] = "jobs",
}

local LISTS = { cmd_results = true, cmd_jobs = true, jobs = true, status_results = true, result = true, phones = true }

local function wrong_types(t)
  if type(t) ~= "table" then return t end
  for k, v in pairs(t) do
    if k == "status" then
      t[k] = "two"
    elseif k == "error_code" and v == "0" then
      t[k] = 0
    elseif (k == "task_id" or k == "job_id" or k == "request_id") and type(v) == "string" then
      t[k] = 12345
    elseif k == "expires_at" then
      t[k] = 12345
    elseif LISTS[k] and util.is_array(v) then
      local obj = {}
      for i, x in ipairs(v) do obj[tostring(i)] = wrong_types(x) end
      t[k] = next(obj) and obj or "none"
    elseif type(v) == "table" then
      wrong_types(v)
    end
  end
  return t
end

local function numeric_code(t)
  if type(t) ~= "table" then return t end
  for k, v in pairs(t) do
    if k == "error_code" and v == "0" then t[k] = 0 elseif type(v) == "table" then numeric_code(v) end
  end
  return t
end

-- reply with the fault instead of (when == "before") or in place of
-- (when == "after") the real response (status, body, headers)
function M.apply(f, ep, status, body, headers)
  local fam = util.family[ep]
  local kind = f.kind
  if kind == "500" or kind == "503" or kind == "429" then
    local code = tonumber(kind)
    local h = {}
    if code ~= 500 then h["Retry-After"] = tostring(math.ceil(f.retry_after)) end
    return util.send(code, error_body(fam, code, MSGS[code]), h)
  elseif kind == "reset" then
    return close_connection()
  elseif kind == "stall" then
    ngx.sleep(f.seconds)
    return close_connection()
  end
  -- body-corrupting kinds need the real response
  if type(body) ~= "string" then body = util.encode(body) end
  headers = headers or {}
  if kind == "malformed" then
    return util.send(status, body:sub(1, math.floor(#body / 2)) .. "<!-- -->", headers)
  elseif kind == "missing" then
    local t = util.decode(body)
    if type(t) == "table" then
      t[REMOVE[ep] or "data"] = nil
      body = util.encode(t)
    end
    if ep == "token" then headers["X-Subject-Token"] = nil end
    return util.send(status, body, headers)
  elseif kind == "wrong_types" or kind == "numeric_code" then
    local t = util.decode(body)
    if type(t) == "table" then body = util.encode((kind == "wrong_types" and wrong_types or numeric_code)(t)) end
    return util.send(status, body, headers)
  end
  -- truncate, slow_body: full Content-Length, body in pieces
  ngx.status = status
  ngx.header["Content-Type"] = "application/json;charset=UTF-8"
  for k, v in pairs(headers) do ngx.header[k] = v end
  ngx.header["Content-Length"] = #body
  if kind == "truncate" then
    ngx.print(body:sub(1, math.floor(#body / 2)))
    ngx.flush(true)
    return ngx.exit(ngx.ERROR)
  end
  -- slow_body
  local chunks = math.max(1, math.min(10, #body))
  local size = math.ceil(#body / chunks)
  local pause = f.seconds / chunks
  local pos = 1
  while pos <= #body do
    ngx.print(body:sub(pos, pos + size - 1))
    ngx.flush(true)
    pos = pos + size
    if pos <= #body then ngx.sleep(pause) end
  end
end

return M
