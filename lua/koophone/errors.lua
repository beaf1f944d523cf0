--- Errors: the one shape every layer of koophone returns as `nil, err`.
--
-- Public calls fail with `nil, message, err` (see `fail`); `err` is a plain
-- table with a readable `tostring` and `..`:
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

-- What a failure without an HTTP status or vendor code was, as a sentence.
local KIND_TEXT = {
  connect = "could not connect", dns = "could not resolve the host name",
  tls = "the TLS handshake or certificate check failed", timeout = "timed out",
  protocol = "the connection failed", decode = "the reply could not be read",
  cancelled = "cancelled", io = "journal input/output failed", closed = "closed",
}

-- A whole number as "401", never "401.0" (lua-cjson gives floats on 5.3+).
local function text(v)
  if type(v) == "number" and v % 1 == 0 and v > -2^53 and v < 2^53 then
    return ("%d"):format(v)
  end
  return tostring(v)
end
M.text = text

-- One line: "HTTP 401 APIGW.0301: incorrect IAM authentication information
-- [request id …]"; validation errors are their message ("instance_ids has
-- 33 ids, at most 32 per request").
local function describe(e)
  local head = {}
  if e.http_status then head[#head + 1] = "HTTP " .. text(e.http_status) end
  if e.code ~= nil and e.code ~= "" then head[#head + 1] = text(e.code) end
  local s = table.concat(head, " ")
  local msg = e.message ~= nil and e.message ~= "" and tostring(e.message) or nil
  if e.kind == "validation" then
    s = msg or ("invalid " .. tostring(e.field or "input"))
  elseif s == "" then
    s = KIND_TEXT[e.kind] or (tostring(e.kind) .. " error")
    if msg then s = s .. ": " .. msg end
  elseif msg then
    s = s .. ": " .. msg
  end
  if e.maybe_executed then s = s .. " (the command may have run)"
  elseif e.maybe_executed == false and e.http_status then s = s .. " (not executed)" end
  if e.request_id then s = s .. " [request id " .. tostring(e.request_id) .. "]" end
  return (s:gsub("[%c]+", " "))
end
Error.__tostring = describe
-- "failed: " .. err works, whichever side the error is on
Error.__concat = function(a, b)
  return (getmetatable(a) == Error and describe(a) or tostring(a))
    .. (getmetatable(b) == Error and describe(b) or tostring(b))
end

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

--- The failure return of every public call: `nil, message, err`, where
-- `message` is one line (`tostring(err)`) and `err` the structured table,
-- so `assert(x())`, `if not x then` and `"failed: " .. msg` all work.
-- @tparam table err
-- @return nil
-- @treturn string message
-- @treturn table err
function M.fail(err)
  return nil, describe(err), err
end

--- True when `e` is an error made by this module.
-- @param e any value
-- @treturn boolean
function M.is(e)
  return getmetatable(e) == Error
end

return M
