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
  if getmetatable(ids) ~= nil then
    -- a proxy (e.g. a read-only view): its length and keys are whatever its
    -- metamethods say, so it is refused with a reason, not "empty"
    return nil, bad(field, "must be a plain list: this table has a metatable (copy the ids into a plain table)")
  end
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
  -- a path segment of dots would walk up the URL (GET /v1/instances/)
  if not id:find("[^%.]") then return nil, bad(field, "must not be '.' or '..' (it goes into the URL path)") end
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

--- The longest duration accepted anywhere (a year): in milliseconds it
-- still fits the C core's integers exactly.
M.limits.max_seconds = 365 * 86400

--- A duration in seconds: a finite number >= 0, at most a year.
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
  if v > M.limits.max_seconds then
    return nil, bad(field, ("must be at most %d seconds (a year), got %g"):format(M.limits.max_seconds, v),
                    M.limits.max_seconds)
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

-- Edit distance (Levenshtein), for "did you mean" hints.
local function distance(a, b)
  local prev, cur = {}, {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    cur[0] = i
    local ca = a:byte(i)
    for j = 1, #b do
      local cost = ca == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev, cur = cur, prev
  end
  return prev[#b]
end

--- The known name closest to `name` (at most two edits away, or a
-- different case), if any.
-- @tparam string name
-- @tparam table known a set (`name -> true`)
-- @treturn ?string
function M.closest(name, known)
  local best, best_d
  for k in pairs(known) do
    local d = distance(name:lower(), k:lower())
    if d <= 2 and d < #k and (not best_d or d < best_d or (d == best_d and k < best)) then
      best, best_d = k, d
    end
  end
  return best
end

--- Refuses keys of an option table that are not in `known`: a typo such as
-- `timout` must not pass silently.
-- @tparam string where what the table is, for messages ("option", "restart entry")
-- @tparam table t the table
-- @tparam table known a set (`name -> true`)
-- @tparam[opt] string prefix prepended to the field name ("phones[2].")
-- @treturn boolean|nil true, or nil and a validation error naming the key
-- @treturn ?table err
function M.known_keys(where, t, known, prefix)
  local unknown
  for k in pairs(t) do
    if not known[k] and (unknown == nil or tostring(k) < tostring(unknown)) then unknown = k end
  end
  if unknown == nil then return true end
  local name = tostring(unknown)
  local msg = ("unknown %s '%s'"):format(where, name)
  local hint = type(unknown) == "string" and M.closest(unknown, known)
  if hint then msg = msg .. (" (did you mean '%s'?)"):format(hint) end
  local e = bad((prefix or "") .. name, "")
  e.message = msg
  return nil, e
end

--- A set from a list of names.
-- @tparam {string,...} list
-- @treturn table
function M.set(list)
  local s = {}
  for _, k in ipairs(list) do s[k] = true end
  return s
end

local property_json = require("cjson").new()

local PHONE_FIELDS = { phone_id = true, id = true, property = true }

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
  local ok, kerr = M.known_keys("restart entry field", p, PHONE_FIELDS, where .. ".")
  if not ok then return nil, kerr end
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
    local encoded, s = pcall(property_json.encode, prop)
    if not encoded then return nil, bad(pwhere, "cannot be encoded as JSON") end
    entry.property = s == "[]" and "{}" or s
  elseif type(prop) == "string" then
    local decoded, v = pcall(property_json.decode, prop)
    if not decoded or type(v) ~= "table" or (next(v) ~= nil and #v > 0) then
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
  local ok, kerr = M.known_keys("install field", app, INSTALL_FIELDS)
  if not ok then return nil, kerr end
  for k, v in pairs(app) do body[k] = v end
  for _, f in ipairs(INSTALL_TEXT) do
    local valid, err = M.text(f[1], body[f[1]], f[2], f[3], f[4])
    if not valid then return nil, err end
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
