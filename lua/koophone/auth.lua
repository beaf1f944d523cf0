--- Authentication: a ready token, or IAM credentials that renew themselves.
--
-- With `token` (or `KOOPHONE_TOKEN`) the client sends it as `X-Auth-Token`.
-- With `iam = {user=, password=, domain=, project_id= | project=,
-- endpoint=}` (or `KOOPHONE_IAM_USER`, `KOOPHONE_IAM_PASSWORD`,
-- `KOOPHONE_IAM_DOMAIN`, `KOOPHONE_IAM_ENDPOINT`) it obtains a token from
-- `POST {endpoint}/v3/auth/tokens` (token in `X-Subject-Token`), caches it,
-- renews it before it expires and once on a 401; concurrent requests share
-- one renewal. Secrets never appear in errors or `tostring`.
-- @module koophone.auth
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

--- Picks the auth for a client's options.
-- @tparam table opts the client's options
-- @treturn table|nil auth
-- @treturn ?table err
function M.from_options(opts)
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
  if type(token) ~= "string" or token == "" then
    return nil, errors.validation("token", "is required: pass token = ... or set KOOPHONE_TOKEN (or give iam credentials)")
  end
  if token:find("[%c]") then return nil, errors.validation("token", "must not contain control characters") end
  return setmetatable({ _token = token }, Static)
end

return M
