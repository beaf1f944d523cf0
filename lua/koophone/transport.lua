--- Transport: one HTTP call with headers, retries and error mapping.
--
-- Retry rules (a command must never run twice):
--
-- * GET (queries): retried on connect, DNS, timeout, protocol and decode
--   errors, on 5xx and on 429 — reading twice is harmless;
-- * POST: retried only when nothing can have run: the request never left
--   (connect/DNS failure before a byte was sent), or the server refused it
--   with 429 or 503. Never after a timeout, a reset or a 500.
--
-- Backoff is exponential with full jitter, capped, and a `Retry-After`
-- header is honoured. Every attempt of one call carries the same
-- `x-request-id`, so support can trace all of them; when the reply has an
-- `X-Request-Id` header, that id (the vendor's) is the one kept in results
-- and errors.
--
-- A 429 (the gateway's `APIGW.0308`) to a command is "not executed":
-- `retryable = true`, `maybe_executed = false`. With an adaptive limiter
-- (`transport.limiter`, see `koophone.ratelimit`) every attempt first waits
-- for its turn, every answer is reported to it, and a 429 is retried after
-- the limiter's pause instead of the exponential backoff. Error bodies are
-- read in every shape the vendor's SDKs read (`error_code`/`error_msg`,
-- `errorCode`/`errorMsg`, `code`/`message`, or nested).
--
-- With AK/SK credentials every attempt is signed afresh (a fresh
-- `X-Sdk-Date`) over the exact body bytes: the JSON body is encoded here,
-- once per call, and the same string is signed and sent. A 401
-- `APIGW.0301` "signature expired" corrects the signing clock by the
-- server's `Date` header and signs once more; any other `APIGW.0301` is
-- final.
-- @module koophone.transport
local cjson = require "cjson"
local sched = require "koophone.sched"
local errors = require "koophone.errors"

-- The settings of the core's private instance (src/json.c): a body encoded
-- here is byte for byte the one the core would have sent.
local json = cjson.new()
json.encode_max_depth(64)
json.encode_invalid_numbers(false)

local M = {}

local Transport = {}
Transport.__index = Transport

--- A transport over `engine`.
-- @tparam table opts `engine`, `auth` (object with `token()` and optional
--   `renew()`), `timeout`, `connect_timeout` (seconds), `retries`,
--   `retry_base`, `retry_cap`, `max_retry_after`, TLS and proxy options,
--   `limiter` (a `koophone.ratelimit` limiter; may also be set later)
-- @treturn table transport
function M.new(opts)
  local self = setmetatable({}, Transport)
  self.engine = assert(opts.engine, "transport: engine required")
  self.auth = opts.auth
  self.timeout_ms = math.floor((opts.timeout or 60) * 1000)
  self.connect_timeout_ms = math.floor((opts.connect_timeout or 10) * 1000)
  self.retries = opts.retries or 3
  self.retry_base = opts.retry_base or 0.1
  self.retry_cap = opts.retry_cap or 10
  self.max_retry_after = opts.max_retry_after or 60
  self.user_agent = "koophone/" .. (opts.version or "0")
  self.headers = { false, "Accept: application/json", "User-Agent: " .. self.user_agent }
  self.curl = {
    url = false, method = false, timeout = false, headers = self.headers,
    connect_timeout = self.connect_timeout_ms,
    -- abort a transfer slower than low_speed_limit bytes/s for low_speed_time s
    low_speed_limit = opts.low_speed_limit, low_speed_time = opts.low_speed_time,
    ca_file = opts.ca_file, ca_path = opts.ca_path, insecure = opts.insecure and true or nil,
    proxy = opts.proxy, no_proxy = opts.no_proxy, http_version = opts.http_version,
    client_cert = opts.client_cert, client_key = opts.client_key,
  }
  self.random = opts.random or math.random
  self.stats = { requests = 0, retries = 0, throttled = 0 }
  self.limiter = opts.limiter
  return self
end

local GET_RETRY = { connect = true, dns = true, timeout = true, protocol = true, decode = true }
local POST_RETRY_UNSENT = { connect = true, dns = true }

-- Pulls {code, message} out of the error bodies the vendor's services use,
-- read as the SDKs read them (docs/vendor.md): `error_code`/`error_msg`,
-- `errorCode`/`errorMsg`, `code`/`message`, else the first object inside
-- (`error` first, then a `details` list, then the other keys in order) that
-- holds one of these pairs, up to 3 levels deep.
local PAIRS = { { "error_code", "error_msg" }, { "errorCode", "errorMsg" }, { "code", "message" } }
local function vendor_fields(body, depth)
  if type(body) ~= "table" then return nil, nil end
  for _, p in ipairs(PAIRS) do
    local code, msg = body[p[1]], body[p[2]]
    if code ~= nil or msg ~= nil then return code, msg end
  end
  depth = depth or 0
  if depth >= 3 then return nil, nil end
  local inner = { body.error, body.details }
  local keys = {}
  for k, v in pairs(body) do
    if type(k) == "string" and type(v) == "table" and k ~= "error" and k ~= "details" then keys[#keys + 1] = k end
  end
  table.sort(keys)
  for _, k in ipairs(keys) do inner[#inner + 1] = body[k] end
  for i = 1, #keys + 2 do
    local v = inner[i]
    if type(v) == "table" then
      local code, msg = vendor_fields(v, depth + 1)
      if code ~= nil or msg ~= nil then return code, msg end
      if v[1] ~= nil then -- a list (details): its first entry
        code, msg = vendor_fields(v[1], depth + 1)
        if code ~= nil or msg ~= nil then return code, msg end
      end
    end
  end
  return nil, nil
end
M.vendor_fields = vendor_fields

local function text(v)
  if v == nil or type(v) == "userdata" or type(v) == "table" then return nil end
  return errors.text(v)
end

-- What curl's terse texts mean for the caller, by curl result code (its own
-- text stays in `err.detail`): a user should read what happened, not
-- "necessary data rewind wasn't possible".
local CURL_SAYS = {
  [18] = "the reply was cut short",                                           -- PARTIAL_FILE
  [52] = "the server closed the connection without replying",                 -- GOT_NOTHING
  [55] = "the connection broke while the request was being sent",             -- SEND_ERROR
  [56] = "the connection broke while the reply was being read",               -- RECV_ERROR
  [65] = "the connection closed after the request was sent, before any reply", -- SEND_FAIL_REWIND
  [16] = "the HTTP/2 connection failed",                                      -- HTTP2
  [92] = "the HTTP/2 stream was reset",                                       -- HTTP2_STREAM
  [8] = "the server's reply was not valid HTTP",                              -- WEIRD_SERVER_REPLY
}

-- Maps one finished attempt to nil (success) or an error table.
function Transport:_classify(res, cerr, method)
  if not cerr and res.status >= 200 and res.status < 300 and type(res.body) == "table" then
    return nil -- the common case: nothing to scrub, nothing to build
  end
  local secrets = self.auth and self.auth.secrets and self.auth:secrets() or nil
  if cerr then
    local detail = errors.scrub(cerr.message, secrets)
    local e = errors.new {
      kind = cerr.kind, message = CURL_SAYS[cerr.curl_code] or detail, detail = detail,
      curl_code = cerr.curl_code, request_id = cerr.request_id, sent = cerr.sent,
    }
    if method == "GET" then e.retryable = GET_RETRY[e.kind] or false
    else
      e.retryable = (POST_RETRY_UNSENT[e.kind] and not cerr.sent) or false
      e.maybe_executed = cerr.sent and true or false
    end
    return e
  end
  local status = res.status
  if status >= 200 and status < 300 then
    local why = res.decode_error and ("body is not JSON: " .. res.decode_error)
      or (res.body == nil and "empty body" or "body is not a JSON object")
    return errors.new { kind = "decode", http_status = status, message = why,
                        request_id = res.request_id,
                        retryable = method == "GET", maybe_executed = method ~= "GET" }
  end
  local code, message = vendor_fields(res.body)
  if not message and res.raw then message = res.raw:sub(1, 200) end
  local e = errors.new {
    kind = "http", http_status = status, code = text(code),
    message = errors.scrub(text(message) or ("HTTP " .. status), secrets),
    request_id = res.request_id,
  }
  if method == "GET" then e.retryable = status >= 500 or status == 429
  else e.retryable = status == 429 or status == 503 end
  if method ~= "GET" and status >= 500 and status ~= 503 then e.maybe_executed = true end
  -- a gateway refusal (429 APIGW.0308) or 503: the command was not executed
  if method ~= "GET" and (status == 429 or status == 503) then e.maybe_executed = false end
  if res.retry_after then e.retry_after = tonumber(res.retry_after) end
  return e
end

-- Full jitter: uniform in [0, min(cap, base * 2^attempt)], at least Retry-After.
function Transport:_backoff(attempt, retry_after)
  local d = math.min(self.retry_cap, self.retry_base * 2 ^ (attempt - 1)) * self.random()
  if retry_after and retry_after > d then d = math.min(retry_after, self.max_retry_after) end
  return d
end

-- Waits until the adaptive limiter (koophone.ratelimit) lets a request go;
-- false when that would pass the call's deadline.
function Transport:_pace(spec)
  local lim = self.limiter
  while true do
    local now = sched.now()
    local wait, ticket = lim:acquire(now)
    if wait <= 0 then return true end
    if spec.deadline and now + wait > spec.deadline then return false end
    sched.sleep(self.engine, wait)
    -- a reserved turn goes unless a 429 voided it meanwhile
    if ticket and lim:valid(ticket, sched.now()) then return true end
  end
end

local function paced_out(request_id, attempt)
  return errors.new { kind = "timeout", request_id = request_id, attempts = attempt, retryable = true,
                      maybe_executed = false, message = "not sent: the adaptive rate limit would pass the deadline" }
end

--- Performs one call (with retries). Waits through `koophone.sched`.
-- @tparam table spec `method`, `url`, `json` (a table to send), `request_id`,
--   `timeout` (seconds, per attempt), `deadline` (a `sched.now()` time after
--   which no retry starts), `retries`, `no_auth` (send no credentials),
--   `no_project` (AK/SK: sign without `X-Project-Id`), `rows` (the ids of a
--   sync-command: its reply's `data.cmd_results`, when plain, become result
--   rows in C, `res.rows`; see `engine:submit` in docs/core.md), `job_rows`
--   (a task's tables, `{jobs, job_of, not_started, id_field, later, root,
--   seen}`: the ended jobs of its query's `data.jobs`, or of a ListJobs
--   page's `jobs`, when plain, become rows, `res.rows`, with
--   `res.job_changes`, `res.job_count`, `res.job_fresh`; see docs/core.md)
-- @treturn table|nil response `{status, body, request_id, attempts, time, rows, job_changes, job_count, job_fresh}`
-- @treturn table|nil err
function Transport:request(spec)
  local method = spec.method or (spec.json and "POST" or "GET")
  if self.closed then return nil, errors.new { kind = "closed", message = "the client is closed" } end
  local request_id = spec.request_id or self.engine:uuid()
  local retries = spec.retries or self.retries
  local attempt, renewed, reclocked = 0, false, false
  local started = sched.now()
  local signing = self.auth and self.auth.kind == "aksk" and not spec.no_auth
  local body
  if signing and spec.json then
    local ok, encoded = pcall(json.encode, spec.json)
    if not ok then
      return nil, errors.new { kind = "validation", field = "body", retryable = false,
                               message = "body cannot be encoded as JSON: " .. tostring(encoded) }
    end
    body = encoded
  end
  while true do
    if self.limiter and not spec.no_auth and not self:_pace(spec) then return nil, paced_out(request_id, attempt) end
    attempt = attempt + 1
    local token, signed
    if signing then
      local pid, perr = false, nil
      if not spec.no_project then pid, perr = self.auth:project() end
      if pid == nil then
        perr.attempts = attempt
        return nil, perr
      end
      signed = self.auth:headers(method, spec.url, body, spec.json and "application/json" or nil, pid or nil)
    else
      token = (self.auth and not spec.no_auth) and self.auth:token() or nil
      if type(token) == "table" then -- the auth layer could not get a token
        token.attempts = attempt
        return nil, token
      end
    end
    -- one header list and one curl spec per transport, refilled per
    -- attempt: submit() copies what it needs before it returns
    local headers, c = self.headers, self.curl
    headers[1] = "x-request-id: " .. request_id
    local n = 3
    if token then
      -- the header line is kept while the token lasts: an IAM token is
      -- several KB, and a new line per request would copy it each time
      if token ~= self.token_of_line then self.token_line, self.token_of_line = "X-Auth-Token: " .. token, token end
      n = n + 1; headers[n] = self.token_line
    end
    if spec.json then n = n + 1; headers[n] = "Content-Type: application/json" end
    if signed then
      for i = 1, #signed do headers[n + i] = signed[i] end
      n = n + #signed
    end
    for i = n + 1, #headers do headers[i] = nil end
    c.url, c.method = spec.url, method
    if body then c.body = body else c.json = spec.json end
    c.rows, c.job_rows = spec.rows, spec.job_rows
    c.timeout = spec.timeout and math.floor(spec.timeout * 1000) or self.timeout_ms
    if spec.deadline then -- no attempt outlives the call's deadline
      local left = math.floor((spec.deadline - sched.now()) * 1000)
      if left < c.timeout then c.timeout = math.max(1, left) end
    end
    local sent_at = sched.now()
    local submitted, req = pcall(self.engine.submit, self.engine, c)
    c.json, c.body, c.rows, c.job_rows = nil, nil, nil, nil
    if not submitted then
      -- an engine shared with a client that closed it: an expected failure
      if tostring(req):find("engine is closed", 1, true) then
        return nil, errors.new { kind = "closed", message = "the engine is closed", request_id = request_id }
      end
      error(req, 0)
    end
    self.stats.requests = self.stats.requests + 1
    sched.await(self.engine, req)
    local res, cerr = req:take() -- read once: the request keeps nothing of it
    local err = self:_classify(res, cerr, method)
    if res and res.status == 429 then self.stats.throttled = self.stats.throttled + 1 end
    if self.limiter and not spec.no_auth and res then
      self.limiter:response(sched.now(), sent_at, res.status == 429, tonumber(res.retry_after))
    end
    if not err then
      res.attempts = attempt
      res.request_id = res.request_id or request_id
      res.elapsed = sched.now() - started
      return res
    end
    err.request_id = err.request_id or request_id
    err.attempts = attempt
    if signing and err.http_status == 401 and err.code == "APIGW.0301" then
      -- a clock off by more than ~15 minutes: correct it once by the
      -- server's Date and sign again; any other refusal is final
      local expired = type(err.message) == "string" and err.message:lower():find("signature expired", 1, true)
      if not (expired and not reclocked and res and self.auth:adjust_clock(res.date)) then
        err.retryable = false
        err.message = "the AK/SK or its signature was refused"
          .. (reclocked and " (even after correcting the clock by the server's Date)" or "")
          .. ": " .. tostring(err.message)
        return nil, err
      end
      reclocked = true
    -- one renewal on 401, when the auth layer can renew (IAM credentials)
    elseif err.http_status == 401 and not renewed and not spec.no_auth and self.auth and self.auth.renew then
      renewed = true
      local ok, rerr = self.auth:renew(token)
      if not ok then return nil, rerr end
      attempt = attempt - 1
    else
      if not err.retryable or attempt > retries then return nil, err end
      -- throttled under an adaptive limiter: its pause and rate are the backoff
      local delay = (self.limiter and err.http_status == 429) and 0 or self:_backoff(attempt, err.retry_after)
      if spec.deadline and sched.now() + delay > spec.deadline then return nil, err end
      self.stats.retries = self.stats.retries + 1
      sched.sleep(self.engine, delay)
    end
  end
end

return M
