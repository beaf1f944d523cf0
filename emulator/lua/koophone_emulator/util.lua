-- Small helpers shared by the emulator's modules (JSON, ids, time, replies).
local cjson = require "cjson.safe"

local ngx = ngx
local find, sub, byte, format, floor = string.find, string.sub, string.byte, string.format, math.floor

local M = {}

M.null = cjson.null
M.encode = cjson.encode
M.decode = cjson.decode

local IDS = ngx.shared.kp_ids

-- the API family of each endpoint: decides the shape of error bodies
M.family = {
  ["sync-command"] = "kp", ["async-command"] = "kp", task = "kp", install = "kp",
  reboot = "kp", reset = "kp", backup = "kp", status = "kp", instances = "kp", apps = "kp",
  restart = "cph", job = "cph", jobs = "cph", phone = "cph", phones = "cph", ["phone-reset"] = "cph",
  token = "iam", projects = "iam", unknown = "kp",
}

M.endpoints = { "sync-command", "async-command", "task", "install", "reboot", "reset", "backup", "status",
                "instances", "apps", "restart", "job", "jobs", "phone", "phones", "phone-reset", "token", "projects" }
M.endpoint_set = {}
for _, e in ipairs(M.endpoints) do M.endpoint_set[e] = true end

-- ISO 8601 UTC; digits = number of fractional digits (0, 3 or 6)
function M.iso(t, digits)
  local s = os.date("!%Y-%m-%dT%H:%M:%S", floor(t))
  if digits == 6 then
    s = s .. format(".%06d", floor((t % 1) * 1e6))
  elseif digits == 3 then
    s = s .. format(".%03d", floor((t % 1) * 1e3))
  end
  return s .. "Z"
end

-- reserve n consecutive numbers of a kind; returns the first
function M.reserve(kind, n)
  local v = IDS:incr(kind, n or 1, 0)
  return v - (n or 1) + 1
end

function M.hex32(seed, kind, i)
  return ngx.md5(tostring(seed) .. ":" .. kind .. ":" .. i)
end

-- 32 url-safe base64 characters (the shape of install task/job ids)
function M.b64id(seed, kind, i)
  local b = ngx.md5_bin(tostring(seed) .. ":" .. kind .. ":" .. i)
         .. ngx.md5_bin(i .. ":" .. kind .. ":" .. tostring(seed))
  local s = ngx.encode_base64(b):gsub("%+", "-"):gsub("/", "_")
  return sub(s, 1, 32)
end

-- a seeded number in [0, 1)
function M.fraction(...)
  local parts = { ... }
  for i = 1, #parts do parts[i] = tostring(parts[i]) end
  return ngx.crc32_long(table.concat(parts, "\0")) / 4294967296
end

-- cut s to at most n bytes without splitting a UTF-8 sequence
function M.truncate(s, n)
  if type(s) ~= "string" or #s <= n then return s end
  local cut = n
  while cut > 0 do
    local b = byte(s, cut + 1)
    if not b or b < 0x80 or b >= 0xC0 then break end
    cut = cut - 1
  end
  return sub(s, 1, cut)
end

function M.is_array(t)
  if type(t) ~= "table" then return false end
  local n = #t
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then return false end
  end
  return true, n
end

function M.is_object(t)
  if type(t) ~= "table" then return false end
  if next(t) == nil then return true end
  return not M.is_array(t)
end

-- error bodies
function M.err(code, msg) return { error_code = code, error_msg = msg } end

--- Stores a task or job record until `retention` seconds (the scenario's)
-- after `finish`: the vendor keeps them for days, but a long-lived
-- emulator must not grow for ever. Never evicts another record (a
-- forgotten task would leave its jobs "running" until the client gives
-- up): when the store is full, returns nil and the reply that says so
-- (503), for the caller to send instead of its own.
function M.keep(dict, name, key, value, finish, retention)
  local ttl = math.max(0.001, finish - ngx.now() + retention) -- 0 would mean for ever
  local ok, err = dict:safe_set(key, value, ttl)
  if ok then return true end
  ngx.log(ngx.ERR, "emulator: ", name, " store: ", err)
  return nil, 503, M.err("KOOPHONE.EMULATOR.STORE", ("the emulator's %s store is full (%s): records are kept %g s " ..
    "after their task ends; POST /_emulator/reset or restart the emulator"):format(name, tostring(err), retention))
end
function M.iam_err(code, msg, title) return { error = { code = code, message = msg, title = title } } end

-- read the request body; returns the string (possibly "")
function M.read_body()
  ngx.req.read_body()
  local data = ngx.req.get_body_data()
  if not data then
    local file = ngx.req.get_body_file()
    if file then
      local f = io.open(file, "rb")
      if f then data = f:read("*a"); f:close() end
    end
  end
  data = data or ""
  ngx.ctx.body_size = #data
  return data
end

-- read and decode a JSON object body; nil, reason on failure
function M.read_json()
  local data = M.read_body()
  if data == "" then return nil, "Request body is empty." end
  local t = cjson.decode(data)
  if type(t) ~= "table" or not M.is_object(t) then
    return nil, "Request body is not a valid JSON object."
  end
  return t
end

-- error body variants the SDKs read (scenario key error_style): the default
-- error_code/error_msg, camelCase errorCode/errorMsg, code/message, or an
-- object nesting code/message under "error"
local function restyle(style, body)
  local t = body
  if type(t) == "string" then t = cjson.decode(t) end
  if type(t) ~= "table" or t.error_code == nil or t.error_msg == nil then return body end
  local code, msg = t.error_code, t.error_msg
  if style == "errorCode" then
    return { errorCode = code, errorMsg = msg }
  elseif style == "code" then
    return { code = code, message = msg }
  elseif style == "nested" then
    return { error = { code = code, message = msg } }
  end
  return body
end

-- send a complete response
function M.send(status, body, headers)
  ngx.status = status
  local h = ngx.header
  h["Content-Type"] = "application/json;charset=UTF-8"
  if headers then
    for k, v in pairs(headers) do h[k] = v end
  end
  local style = ngx.ctx.error_style
  if status >= 400 and style and style ~= "error_code" then body = restyle(style, body) end
  if type(body) ~= "string" then body = cjson.encode(body) end
  h["Content-Length"] = #body
  ngx.print(body)
end

function M.split(s, sep)
  local out, pos = {}, 1
  while true do
    local i = find(s, sep, pos, true)
    if not i then out[#out + 1] = sub(s, pos); break end
    out[#out + 1] = sub(s, pos, i - 1)
    pos = i + #sep
  end
  return out
end

function M.deepcopy(v)
  if type(v) ~= "table" then return v end
  local o = {}
  for k, x in pairs(v) do o[k] = M.deepcopy(x) end
  return o
end

return M
