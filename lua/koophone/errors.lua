--- Errors: the one shape every layer of koophone returns as `nil, err`.
--
-- An error is a plain table with a readable `tostring`:
--
--     { kind = "http" | "vendor" | "validation" | "timeout" | "connect" | "dns"
--              | "tls" | "decode" | "protocol" | "cancelled",
--       http_status = 400, code = "KOOPHONE.API.1000", message = "...",
--       field = "instance_ids", limit = 32, request_id = "...",
--       retryable = false, attempts = 1 }
--
-- Messages are scrubbed of secrets (tokens, signed URLs' query strings)
-- before they are stored.
-- @module koophone.errors
local M = {}

local Error = {}
Error.__index = Error

local function describe(e)
  local parts = { "koophone: " .. tostring(e.kind) .. " error" }
  if e.code and e.code ~= "" then parts[#parts + 1] = tostring(e.code) end
  if e.http_status then parts[#parts + 1] = "(HTTP " .. tostring(e.http_status) .. ")" end
  local s = table.concat(parts, " ")
  if e.message and e.message ~= "" then s = s .. ": " .. tostring(e.message) end
  if e.field then
    s = s .. " [field " .. tostring(e.field)
    if e.limit then s = s .. ", limit " .. tostring(e.limit) end
    s = s .. "]"
  end
  if e.request_id then s = s .. " [request_id " .. tostring(e.request_id) .. "]" end
  return s
end
Error.__tostring = describe

--- Removes the query string of every URL in `s` (signed URLs carry
-- credentials there) and every occurrence of the given secrets.
-- @tparam string s text to scrub
-- @tparam[opt] {string,...} secrets exact strings to hide
-- @treturn string
function M.scrub(s, secrets)
  if type(s) ~= "string" then return s end
  -- idempotent: an already scrubbed "?<redacted>" is left as it is
  s = s:gsub("(https?://[^%s%?\"'<>]*)%?([^%s\"'<>]*)", function(base, query)
    if query == "" then return nil end
    return base .. "?<redacted>"
  end)
  if secrets then
    for _, secret in ipairs(secrets) do
      if type(secret) == "string" and #secret >= 4 then
        local i = 1
        while true do
          local a, b = s:find(secret, i, true)
          if not a then break end
          s = s:sub(1, a - 1) .. "<redacted>" .. s:sub(b + 1)
          i = a + 10
        end
      end
    end
  end
  return s
end

--- Builds an error table.
-- @tparam table fields at least `kind` and `message`
-- @treturn table the error (with `__tostring`)
function M.new(fields)
  assert(type(fields) == "table" and fields.kind, "errors.new: kind required")
  return setmetatable(fields, Error)
end

--- A validation error: names the field and the limit it broke.
-- @tparam string field the parameter, as the caller named it
-- @tparam string message what is wrong
-- @param[opt] limit the bound that was broken
-- @treturn table
function M.validation(field, message, limit)
  return setmetatable({ kind = "validation", field = field, limit = limit,
                        message = field .. " " .. message, retryable = false }, Error)
end

--- True when `e` is an error made by this module.
-- @param e any value
-- @treturn boolean
function M.is(e)
  return getmetatable(e) == Error
end

return M
