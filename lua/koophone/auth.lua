--- Authentication: a ready token, or IAM credentials that renew themselves.
--
-- With `token` (or `KOOPHONE_TOKEN`) the client sends it as `X-Auth-Token`.
-- With `iam = {user=, password=, domain=, project_id= | project=,
-- endpoint=}` (or `KOOPHONE_IAM_USER`, `KOOPHONE_IAM_PASSWORD`,
-- `KOOPHONE_IAM_DOMAIN`, `KOOPHONE_IAM_ENDPOINT`) it obtains a token from
-- `POST {endpoint}/v3/auth/tokens` (token in `X-Subject-Token`), caches it,
-- renews it before it expires and once on a 401; concurrent requests share
-- one renewal.
-- With `ak` and `sk` (or `HUAWEICLOUD_SDK_AK`, `HUAWEICLOUD_SDK_SK`, and
-- `security_token` / `HUAWEICLOUD_SDK_SECURITY_TOKEN` for temporary
-- credentials) every attempt of every request is signed (SDK-HMAC-SHA256,
-- `koophone.core.sign`); without a project id it is looked up in IAM as the
-- vendor's SDKs do. Secrets never appear in errors or `tostring`.
-- See docs/credentials.md.
-- @module koophone.auth
local core = require "koophone.core"
local errors = require "koophone.errors"
local sched = require "koophone.sched"

local M = {}

local function getenv(name)
  local v = os.getenv(name)
  if v == "" then return nil end
  return v
end

-- A ready token.
local Static = {}
Static.__index = Static
Static.__tostring = function() return "koophone.auth (token <redacted>)" end
function Static:token() return self._token end
function Static:secrets() return { self._token } end
function Static.attach() end

-- IAM credentials.
local Iam = {}
Iam.__index = Iam
Iam.__tostring = function(self) return ("koophone.auth (IAM user %s, password <redacted>)"):format(self.user) end

function Iam:secrets() return { self.password, self._token } end
function Iam:attach(transport) self.transport = transport end

-- "2026-11-23T11:08:41.123000Z" -> seconds since an arbitrary epoch; only
-- differences of two such values are used, so no time zone is involved.
local function iso_seconds(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, h, mi, sec = s:match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)")
  if not y then return nil end
  y, mo = tonumber(y), tonumber(mo)
  if mo <= 2 then y, mo = y - 1, mo + 12 end
  local days = 365 * y + math.floor(y / 4) - math.floor(y / 100) + math.floor(y / 400)
    + math.floor((153 * (mo - 3) + 2) / 5) + tonumber(d)
  return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(sec)
end
M.iso_seconds = iso_seconds

--- Obtains a fresh token (shared by every caller waiting meanwhile).
-- @param stale the token that was refused, if any
-- @treturn boolean|nil true, or nil and an error
function Iam:renew(stale)
  if stale and self._token ~= stale then return true end -- someone renewed already
  -- A renewal belongs to no single caller: its owner may be abandoned (a
  -- coroutine never resumed, a batch's task_timeout) and never come back.
  -- Waiters give up at the renewal's deadline; the next caller then starts
  -- a fresh one.
  local current = self.renewing
  if current and sched.now() < current.deadline then
    while self.renewing == current and sched.now() < current.deadline do
      sched.sleep(self.transport.engine, math.min(0.01, math.max(0.001, current.deadline - sched.now())))
    end
    if self.renewing ~= current then
      if self._token then return true end
      return nil, self.last_error
    end
    return nil, errors.new { kind = "timeout", message = ("IAM token renewal did not finish within %gs")
                             :format(self.renew_timeout) }
  end
  current = { deadline = sched.now() + self.renew_timeout }
  self.renewing = current
  local scope = self.project_id and { project = { id = self.project_id } }
    or { project = { name = self.project } }
  local res, err = self.transport:request {
    method = "POST", url = self.endpoint .. "/v3/auth/tokens", no_auth = true, deadline = current.deadline,
    json = { auth = { identity = { methods = { "password" }, password = { user = {
      name = self.user, password = self.password, domain = { name = self.domain } } } },
      scope = scope } },
  }
  if self.renewing == current then self.renewing = nil end
  if res and not res.subject_token then
    err = errors.new { kind = "protocol", http_status = res.status, request_id = res.request_id,
                       message = "IAM reply has no X-Subject-Token header" }
  end
  if not res or err then
    err.message = "IAM token request failed: " .. tostring(err.message)
    self._token, self.last_error = nil, err
    return nil, err
  end
  local t = type(res.body.token) == "table" and res.body.token or {}
  local ttl = 86400
  local exp, iss = iso_seconds(t.expires_at), iso_seconds(t.issued_at)
  if exp and iss and exp > iss then ttl = exp - iss end
  self._token = res.subject_token
  self.expires = sched.now() + ttl
  -- renew ahead of expiry: 5 minutes, or a tenth of a short lifetime
  self.renew_at = sched.now() + ttl - math.min(300, ttl / 10)
  self.renewals = (self.renewals or 0) + 1
  return true
end

--- The current token, renewed first when due; or an error table.
function Iam:token()
  if not self._token or sched.now() >= self.renew_at then
    local ok, err = self:renew(self._token)
    if not ok then return err end
  end
  return self._token
end

-- AK/SK request signing.
local AkSk = {}
AkSk.__index = AkSk
AkSk.kind = "aksk"
AkSk.__tostring = function(self)
  return ("koophone.auth (AK/SK, access key %s..., secret key <redacted>%s)")
    :format(self.ak:sub(1, 4), self.security_token and ", temporary" or "")
end

function AkSk:secrets() return { self.sk, self.security_token } end
function AkSk:attach(transport) self.transport = transport end

local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6,
                 Jul = 7, Aug = 8, Sep = 9, Oct = 10, Nov = 11, Dec = 12 }

-- Days since 1970-01-01 of a civil date (proleptic Gregorian).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

--- Unix seconds of an HTTP `Date` header ("Sun, 06 Nov 1994 08:49:37 GMT").
-- @tparam string s
-- @treturn number|nil
function M.http_date(s)
  if type(s) ~= "string" then return nil end
  local d, mon, y, h, mi, sec = s:match("(%d+)[ %-](%a%a%a)[ %-](%d+) (%d+):(%d+):(%d+)")
  if not d or not MONTHS[mon] then return nil end
  y = tonumber(y)
  if y < 100 then y = y + 1900 end
  return days_from_civil(y, MONTHS[mon], tonumber(d)) * 86400
    + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(sec)
end

--- Corrects the signing clock by the server's `Date` header, after a
-- "signature expired" refusal.
-- @tparam string date the header's value
-- @treturn boolean true when the header could be read
function AkSk:adjust_clock(date)
  local server = M.http_date(date)
  if not server then return false end
  self.clock_offset = server - os.time()
  return true
end

--- The header lines that authenticate one attempt: `X-Project-Id` (when
-- known), `X-Sdk-Date`, `X-Security-Token` (temporary credentials) and
-- `Authorization`, signed over the exact body bytes.
-- @tparam string method
-- @tparam string url
-- @tparam ?string body the bytes that will be sent
-- @tparam ?string content_type the Content-Type that will be sent
-- @tparam ?string project_id
-- @treturn {string,...}
function AkSk:headers(method, url, body, content_type, project_id)
  local signed = {}
  if content_type then signed["Content-Type"] = content_type end
  if project_id then signed["X-Project-Id"] = project_id end
  local lines = core.sign { method = method, url = url, body = body, headers = signed,
                            ak = self.ak, sk = self.sk, security_token = self.security_token,
                            date = os.time() + self.clock_offset }
  if project_id then table.insert(lines, 1, "X-Project-Id: " .. project_id) end
  return lines
end

local function project_error(self, message, res)
  return errors.new { kind = "validation", field = "project_id", request_id = res and res.request_id,
                      message = "project_id " .. message .. " (region " .. self.region
                        .. "; set project_id or HUAWEICLOUD_SDK_PROJECT_ID)" }
end

--- The project id: the one given, or the single IAM project named after the
-- region (`GET {iam_endpoint}/v3/projects?name={region}`, signed), looked up
-- once and cached; `false` without a region.
-- @treturn string|false|nil project id, or nil and an error
-- @treturn ?table err
function AkSk:project()
  if self.project_id then return self.project_id end
  if not self.region then return false end
  if self.discovering then
    while self.discovering do sched.sleep(self.transport.engine, 0.01) end
    if self.project_id then return self.project_id end
    return nil, self.last_error
  end
  self.discovering = true
  local res, err = self.transport:request {
    method = "GET", url = self.iam_endpoint .. "/v3/projects?name=" .. self.region, no_project = true,
  }
  self.discovering = false
  if res then
    local list = type(res.body.projects) == "table" and res.body.projects or {}
    local ids = {}
    for _, p in ipairs(list) do
      if type(p) == "table" and type(p.id) == "string" and p.id:match("^[%w%-_%.]+$") then ids[#ids + 1] = p.id end
    end
    if #ids == 1 then
      self.project_id = ids[1]
      return ids[1]
    end
    err = project_error(self, #ids == 0 and "could not be found: IAM has no project named after the region"
      or ("is ambiguous: IAM has " .. #ids .. " projects named after the region (" .. table.concat(ids, ", ") .. ")"), res)
  else
    err.message = "IAM project lookup for region " .. self.region .. " failed: " .. tostring(err.message)
  end
  self.last_error = err
  return nil, err
end

local function aksk_from(opts, client)
  local ak = opts.ak or getenv("HUAWEICLOUD_SDK_AK")
  local sk = opts.sk or getenv("HUAWEICLOUD_SDK_SK")
  local token = opts.security_token or getenv("HUAWEICLOUD_SDK_SECURITY_TOKEN")
  for _, f in ipairs { { "ak", ak }, { "sk", sk } } do
    local field, v = f[1], f[2]
    if type(v) ~= "string" or v == "" then
      return nil, errors.validation(field, "is required with AK/SK credentials (a non-empty string; or HUAWEICLOUD_SDK_"
        .. field:upper() .. ")")
    end
    if #v > 256 then return nil, errors.validation(field, "is longer than 256 characters", 256) end
  end
  if ak:find("[^%w%-_%.]") then return nil, errors.validation("ak", "may hold only letters, digits, '-', '_' and '.'") end
  if sk:find("%c") then return nil, errors.validation("sk", "must not contain control characters") end
  if token ~= nil and (type(token) ~= "string" or token == "" or token:find("%c")) then
    return nil, errors.validation("security_token", "must be a non-empty string without control characters")
  end
  client = client or {}
  return setmetatable({ ak = ak, sk = sk, security_token = token, clock_offset = 0,
                        project_id = client.project_id or getenv("HUAWEICLOUD_SDK_PROJECT_ID"),
                        region = client.region, iam_endpoint = client.iam_endpoint }, AkSk)
end

--- Picks the auth for a client's options.
-- Explicit options first (`ak`/`sk`, `token`, `iam`), then the
-- environment (`KOOPHONE_TOKEN`, `KOOPHONE_IAM_*`, `HUAWEICLOUD_SDK_AK`).
-- @tparam table opts the client's options
-- @tparam[opt] table client the client being built (`project_id`, `region`,
--   `iam_endpoint`)
-- @treturn table|nil auth
-- @treturn ?table err
function M.from_options(opts, client)
  if opts.ak ~= nil or opts.sk ~= nil then return aksk_from(opts, client) end
  local iam = opts.iam
  if not iam and not opts.token and getenv("KOOPHONE_IAM_USER") then
    iam = { user = getenv("KOOPHONE_IAM_USER"), password = getenv("KOOPHONE_IAM_PASSWORD"),
            domain = getenv("KOOPHONE_IAM_DOMAIN"), project_id = getenv("KOOPHONE_PROJECT_ID"),
            endpoint = getenv("KOOPHONE_IAM_ENDPOINT") }
  end
  if iam then
    if type(iam) ~= "table" then return nil, errors.validation("iam", "must be a table") end
    for _, k in ipairs { "user", "password", "domain", "endpoint" } do
      if type(iam[k]) ~= "string" or iam[k] == "" then
        return nil, errors.validation("iam." .. k, "is required (a non-empty string)")
      end
    end
    if not (iam.project_id or iam.project) then
      return nil, errors.validation("iam.project_id", "is required (or iam.project, a project name)")
    end
    local endpoint = iam.endpoint:gsub("/+$", "")
    if not endpoint:match("^https://") and not (opts.allow_insecure or
        endpoint:match("^http://127%.") or endpoint:match("^http://localhost[:/]?")) then
      return nil, errors.validation("iam.endpoint", "must use https:// (or allow_insecure = true)")
    end
    return setmetatable({ user = iam.user, password = iam.password, domain = iam.domain,
                          project_id = iam.project_id, project = iam.project,
                          endpoint = endpoint, renew_at = 0,
                          -- one IAM request with its retries, then waiters give up
                          renew_timeout = (opts.timeout or 60) * 2 + 5 }, Iam)
  end
  local token = opts.token or getenv("KOOPHONE_TOKEN")
  if token == nil and (getenv("HUAWEICLOUD_SDK_AK") or getenv("HUAWEICLOUD_SDK_SK")) then
    return aksk_from(opts, client)
  end
  if type(token) ~= "string" or token == "" then
    return nil, errors.validation("token", "is required: pass token = ... or set KOOPHONE_TOKEN"
      .. " (or give iam credentials, or ak and sk)")
  end
  if token:find("[%c]") then return nil, errors.validation("token", "must not contain control characters") end
  return setmetatable({ _token = token }, Static)
end

return M
