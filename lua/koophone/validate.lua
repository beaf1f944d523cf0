--- Validation: every documented limit, checked before anything is sent.
-- Each check returns `true` or `nil, err` with `err.field` and `err.limit`.
-- Limits come from the vendor pages (see ../shared/API.md).
-- @module koophone.validate
local errors = require "koophone.errors"

local M = {}

--- The documented limits.
M.limits = {
  command_bytes = 1024,
  id_chars = 32,
  sync_ids = 32,
  async_ids = 100,
  install_ids = 100,
  name_chars = 100,       -- object_name, file_name, object_version
  type_chars = 64,        -- biz_type, content_type
  md5_chars = 200,
  url_chars = 2000,
  phone_id_chars = 64,
  list_request_ids = 20,
  list_limit = 100,
}

local bad = errors.validation
local check_ids = require("koophone.core").check_ids

local function has_control(s)
  return s:find("[%z\1-\31\127]") ~= nil
end

--- A command for sync-command or async-command.
-- @tparam string command
-- @tparam[opt] boolean strict also enforce the documented charset
--   (letters, digits, `_ . / : -`); off by default since the vendor's own
--   example (`ls -l /system`) has spaces
function M.command(command, strict)
  if type(command) ~= "string" then return nil, bad("command", "must be a string, got " .. type(command)) end
  if command == "" then return nil, bad("command", "must not be empty", M.limits.command_bytes) end
  if #command > M.limits.command_bytes then
    return nil, bad("command", ("is %d bytes, at most %d allowed"):format(#command, M.limits.command_bytes),
                    M.limits.command_bytes)
  end
  if has_control(command) then
    return nil, bad("command", "must not contain control characters (NUL, CR, LF, ...)")
  end
  if strict and command:find("[^%w_%./:%-]") then
    return nil, bad("command", "has characters outside the documented set (letters, digits, _ . / : -)")
  end
  return true
end

--- A list of instance (or phone) ids: non-empty, at most `max` of them,
-- each a non-empty string of at most `max_chars` characters, no duplicates.
-- @tparam string field the parameter's name for messages
-- @tparam table ids
-- @tparam integer max
-- @tparam[opt=32] integer max_chars
function M.ids(field, ids, max, max_chars)
  max_chars = max_chars or M.limits.id_chars
  if type(ids) ~= "table" then return nil, bad(field, "must be a list of ids, got " .. type(ids)) end
  local n = #ids
  if n == 0 or next(ids) == nil then return nil, bad(field, "must not be empty", max) end
  if max and n > max then
    return nil, bad(field, ("has %d ids, at most %d per request"):format(n, max), max)
  end
  -- the per-id checks run in C (koophone.core.check_ids): they run for
  -- every id of every request
  local i, problem, first = check_ids(ids, n, max_chars)
  if i == 0 then return nil, bad(field, "must be a list (a sequence): it has keys besides 1.." .. n) end
  if i then
    local id = ids[i]
    local where = ("%s[%d]"):format(field, i)
    if problem == "type" then return nil, bad(where, "must be a string, got " .. type(id)) end
    if problem == "empty" then return nil, bad(where, "must not be empty") end
    if problem == "length" then
      return nil, bad(where, ("is %d characters, at most %d allowed"):format(#id, max_chars), max_chars)
    end
    if problem == "duplicate" then return nil, bad(where, ("duplicates %s[%d] (%q)"):format(field, first, id)) end
    return nil, bad(where, "must not contain spaces, control characters, '/', '?' or '#'")
  end
  return true
end

--- An id that goes into a URL path (task_id, job_id).
-- @tparam string field
-- @param id
function M.path_id(field, id)
  if type(id) ~= "string" then return nil, bad(field, "must be a string, got " .. type(id)) end
  if id == "" then return nil, bad(field, "must not be empty") end
  if #id > 128 then return nil, bad(field, "is longer than 128 characters", 128) end
  if id:find("[^%w%-_%.]") then
    return nil, bad(field, "may hold only letters, digits, '-', '_' and '.'")
  end
  return true
end

--- A string field with a length bound.
-- @tparam string field
-- @param v
-- @tparam integer max
-- @tparam boolean required
-- @tparam[opt] boolean allow_empty
function M.text(field, v, max, required, allow_empty)
  if v == nil then
    if required then return nil, bad(field, "is required", max) end
    return true
  end
  if type(v) ~= "string" then return nil, bad(field, "must be a string, got " .. type(v), max) end
  if v == "" and not allow_empty then return nil, bad(field, "must not be empty", max) end
  if #v > max then
    return nil, bad(field, ("is %d characters, at most %d allowed"):format(#v, max), max)
  end
  if has_control(v) then return nil, bad(field, "must not contain control characters") end
  return true
end

--- A duration in seconds: a finite number >= 0.
-- @tparam string field
-- @param v
-- @tparam[opt] boolean positive require > 0
function M.seconds(field, v, positive)
  if v == nil then return true end
  if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then
    return nil, bad(field, "must be a finite number of seconds, got " .. tostring(v))
  end
  if v < 0 or (positive and v == 0) then
    return nil, bad(field, "must be " .. (positive and "> 0" or ">= 0") .. " seconds, got " .. tostring(v))
  end
  return true
end

--- A whole number within [min, max].
-- @tparam string field
-- @param v
-- @tparam number min
-- @tparam[opt] number max
function M.integer(field, v, min, max)
  if type(v) ~= "number" or v ~= v or v % 1 ~= 0 then
    return nil, bad(field, "must be a whole number, got " .. tostring(v))
  end
  if v < min or (max and v > max) then
    return nil, bad(field, ("must be between %s and %s, got %s"):format(min, max or "inf", v), max or min)
  end
  return true
end

local property_json = require("cjson").new()

--- One phone of a batch-restart: a phone id, or `{phone_id=, property=}`
-- where `property` is a table of attributes or a JSON object string.
-- Returns the entry to send, `property` JSON-encoded (the API wants a
-- string).
-- @param p
-- @tparam string where the phone's place for messages, e.g. "phones[3]"
-- @treturn table|nil `{phone_id=, property=}`
-- @treturn ?table err
function M.phone(p, where)
  if type(p) == "string" then return { phone_id = p } end
  if type(p) ~= "table" then return nil, bad(where, "must be a phone id or {phone_id=, property=}") end
  local entry = { phone_id = p.phone_id or p.id }
  if entry.phone_id == nil then return nil, bad(where .. ".phone_id", "is required") end
  if type(entry.phone_id) ~= "string" then
    return nil, bad(where .. ".phone_id", "must be a string, got " .. type(entry.phone_id))
  end
  local prop, pwhere = p.property, where .. ".property"
  if type(prop) == "table" then
    if next(prop) ~= nil and #prop > 0 then
      return nil, bad(pwhere, "must be a table of attributes (a JSON object), not a list")
    end
    local ok, s = pcall(property_json.encode, prop)
    if not ok then return nil, bad(pwhere, "cannot be encoded as JSON") end
    entry.property = s == "[]" and "{}" or s
  elseif type(prop) == "string" then
    local ok, v = pcall(property_json.decode, prop)
    if not ok or type(v) ~= "table" or (next(v) ~= nil and #v > 0) then
      return nil, bad(pwhere, "must be a JSON object string such as '{\"wifi_name\":\"lab\"}'")
    end
    entry.property = prop
  elseif prop ~= nil then
    return nil, bad(pwhere, "must be a table or a JSON string")
  end
  return entry
end

local INSTALL_TEXT = {
  { "object_name", M.limits.name_chars, true }, { "file_name", M.limits.name_chars, true },
  { "object_version", M.limits.name_chars, true }, { "biz_type", M.limits.type_chars, true },
  { "content_type", M.limits.type_chars, true }, { "content_md5", M.limits.md5_chars, false, true },
  { "install_package_url", M.limits.url_chars, true },
}
local INSTALL_FIELDS = { fast_install = true, object_size = true }
for _, f in ipairs(INSTALL_TEXT) do INSTALL_FIELDS[f[1]] = true end

--- An app to install (everything but the instances). Returns the body to
-- send: defaults filled in (`biz_type` "apk", `content_type`
-- "application/octet-stream", `content_md5` ""), `fast_install` and
-- `object_size` as numbers, as the page's example sends them.
-- @tparam table app
-- @treturn table|nil body
-- @treturn ?table err
function M.app(app)
  if type(app) ~= "table" then return nil, bad("app", "must be a table of install fields") end
  local body = { biz_type = "apk", content_type = "application/octet-stream", content_md5 = "" }
  for k, v in pairs(app) do
    if not INSTALL_FIELDS[k] then
      return nil, bad(tostring(k), "is not an install field (known: object_name, file_name, object_version, "
                      .. "object_size, fast_install, biz_type, content_type, content_md5, install_package_url)")
    end
    body[k] = v
  end
  for _, f in ipairs(INSTALL_TEXT) do
    local ok, err = M.text(f[1], body[f[1]], f[2], f[3], f[4])
    if not ok then return nil, err end
  end
  if not body.install_package_url:match("^https?://[^/%s]") or body.install_package_url:find("%s") then
    return nil, bad("install_package_url", "must be an http(s) URL without spaces", M.limits.url_chars)
  end
  local fast = body.fast_install
  if fast == nil then fast = 0 end
  if fast == true then fast = 1 elseif fast == false then fast = 0 end
  fast = tonumber(fast)
  if fast ~= 0 and fast ~= 1 then
    return nil, bad("fast_install", "must be 0 (common) or 1 (quick), got " .. tostring(body.fast_install))
  end
  body.fast_install = fast
  local size = body.object_size
  if type(size) == "string" and size:match("^%d+$") then size = tonumber(size) end
  if type(size) ~= "number" or size ~= size or size < 0 or size % 1 ~= 0 or size > 2^53 then
    return nil, bad("object_size", "must be a whole number of MB (number or digit string), got "
                    .. tostring(body.object_size))
  end
  body.object_size = size
  return body
end

return M
