-- AK/SK signature checks (SDK-HMAC-SHA256), the gateway's side: written from
-- the vendor's description (VENDOR.md, the SDKs' signers), sharing no code
-- with the client. SHA-256 and HMAC come from Debian's lua-luaossl.
--
-- A request is accepted when its Authorization header names a known AK,
-- signs at least host and x-sdk-date, sends every header it signs, is dated
-- within 15 minutes of the emulator's clock (ngx.now() + clock_offset), and
-- its signature matches. Otherwise: 401 APIGW.0301, as the vendor's gateway.
local digest = require "openssl.digest"
local hmac = require "openssl.hmac"

local ngx = ngx
local byte, char, format, gsub, sub = string.byte, string.char, string.format, string.gsub, string.sub
local C = ngx.shared.kp_counters

local M = {}

M.MAX_SKEW = 15 * 60
local PREFIX = "Incorrect IAM authentication information: "

local function hex(s)
  return (gsub(s, ".", function(c) return format("%02x", byte(c)) end))
end

local function sha256_hex(s) return hex(digest.new("sha256"):final(s)) end
local function hmac_hex(key, s) return hex(hmac.new(key, "sha256"):final(s)) end

-- only A-Z a-z 0-9 - _ . ~ stay as they are
local function escape(s)
  return (gsub(s, "[^A-Za-z0-9%-_%.~]", function(c) return format("%%%02X", byte(c)) end))
end

local function unescape(s, plus)
  if plus then s = gsub(s, "%+", " ") end
  return (gsub(s, "%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end

local function split(s, sep)
  local out, pos = {}, 1
  while true do
    local i = s:find(sep, pos, true)
    if not i then out[#out + 1] = sub(s, pos); return out end
    out[#out + 1] = sub(s, pos, i - 1)
    pos = i + 1
  end
end

local function canonical_uri(raw_path)
  local parts = split(raw_path, "/")
  for i, p in ipairs(parts) do parts[i] = escape(unescape(p)) end
  local uri = table.concat(parts, "/")
  if sub(uri, -1) ~= "/" then uri = uri .. "/" end
  return uri
end

local function canonical_query(args)
  if not args or args == "" then return "" end
  local pairs_ = {}
  for _, kv in ipairs(split(args, "&")) do
    if kv ~= "" then
      local eq = kv:find("=", 1, true)
      local k = eq and sub(kv, 1, eq - 1) or kv
      local v = eq and sub(kv, eq + 1) or ""
      pairs_[#pairs_ + 1] = { unescape(k, true), unescape(v, true) }
    end
  end
  table.sort(pairs_, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  for i, p in ipairs(pairs_) do pairs_[i] = escape(p[1]) .. "=" .. escape(p[2]) end
  return table.concat(pairs_, "&")
end

-- "20191115T033655Z" -> Unix seconds
local function sdk_time(s)
  local y, mo, d, h, mi, sec = (s or ""):match("^(%d%d%d%d)(%d%d)(%d%d)T(%d%d)(%d%d)(%d%d)Z$")
  if not y then return nil end
  y, mo = tonumber(y), tonumber(mo)
  if mo <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((mo + 9) % 12) + 2) / 5) + tonumber(d) - 1
  local days = era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
  return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(sec)
end
M.sdk_time = sdk_time

--- The emulator's clock (skewed by the scenario's clock_offset).
function M.now(cfg) return ngx.now() + (tonumber(cfg.clock_offset) or 0) end

local function fail(kind, msg)
  C:incr("aksk:" .. kind, 1, 0)
  return nil, PREFIX .. msg
end

local function find_secret(cfg, ak)
  for _, pair in ipairs(cfg.aksk or {}) do
    if pair.ak == ak then return pair end
  end
  return nil
end

-- true, or nil and the APIGW.0301 message
function M.verify(cfg, authz, body)
  local ak, signed, sig = authz:match("^SDK%-HMAC%-SHA256%s+Access=([^,%s]+),%s*SignedHeaders=([^,%s]+),%s*Signature=(%x+)%s*$")
  if not ak then return fail("failed", "Authorization header is malformed") end
  local pair = find_secret(cfg, ak)
  if not pair then return fail("failed", "ak " .. ak .. " not exist") end
  local headers = ngx.req.get_headers(100)
  local names = split(signed, ";")
  local listed = {}
  for _, n in ipairs(names) do listed[n] = true end
  for _, need in ipairs { "host", "x-sdk-date" } do
    if not listed[need] then return fail("failed", "header " .. need .. " must be signed, SignedHeaders=" .. signed) end
  end
  if pair.security_token then
    if headers["x-security-token"] ~= pair.security_token then return fail("failed", "security token is invalid") end
    if not listed["x-security-token"] then
      return fail("failed", "header x-security-token must be signed, SignedHeaders=" .. signed)
    end
  end
  local lines = {}
  for i, n in ipairs(names) do
    local v = headers[n]
    if type(v) ~= "string" then
      return fail("failed", "signed header " .. n .. " is missing or repeated, SignedHeaders=" .. signed)
    end
    if i > 1 and names[i - 1] >= n then return fail("failed", "SignedHeaders must be sorted: " .. signed) end
    lines[i] = n .. ":" .. v:match("^%s*(.-)%s*$") .. "\n"
  end
  local date = headers["x-sdk-date"]
  local t = sdk_time(date)
  if not t then return fail("failed", "X-Sdk-Date is not like 20191115T033655Z: " .. tostring(date)) end
  local now = M.now(cfg)
  if math.abs(now - t) > M.MAX_SKEW then
    return fail("expired", "signature expired, signature time: " .. date .. ", server time: "
                .. os.date("!%Y%m%dT%H%M%SZ", math.floor(now)))
  end
  local raw = ngx.var.request_uri
  local q = raw:find("?", 1, true)
  local path = q and sub(raw, 1, q - 1) or raw
  local creq = table.concat({
    ngx.req.get_method(), canonical_uri(path), canonical_query(ngx.var.args),
    table.concat(lines), signed, sha256_hex(body or "") }, "\n")
  local sts = "SDK-HMAC-SHA256\n" .. date .. "\n" .. sha256_hex(creq)
  if hmac_hex(pair.sk, sts) ~= sig:lower() then
    return fail("failed", "verify aksk signature fail, SignedHeaders=" .. signed .. ", CanonicalRequest: "
                .. gsub(creq, "\n", "|"))
  end
  C:incr("aksk:ok", 1, 0)
  return true
end

--- Counters for /_emulator/stats.
function M.stats()
  return { ok = C:get("aksk:ok") or 0, failed = C:get("aksk:failed") or 0, expired = C:get("aksk:expired") or 0 }
end

return M
