-- The gateway's per-user throttling (scenario key rate_limit = {limit, window}):
-- at most `limit` requests per user in each fixed window of `window` seconds;
-- over it, 429 APIGW.0308 with Retry-After, and the request is not processed.
-- A user is the X-Auth-Token, or the AK of an AK/SK-signed request.
local util = require "koophone_emulator.util"

local ngx = ngx
local RL = ngx.shared.kp_rl
local C = ngx.shared.kp_counters
local floor, ceil, match, format = math.floor, math.ceil, string.match, string.format

local M = {}

-- "5 minute", "3 second", "1 hour": the unit the gateway's message uses
local function span(window)
  if window >= 3600 and window % 3600 == 0 then return format("%d hour", window / 3600) end
  if window >= 60 and window % 60 == 0 then return format("%d minute", window / 60) end
  if window % 1 == 0 then return format("%d second", window) end
  return format("%g second", window)
end
M.span = span

local function user()
  local auth = ngx.var.http_authorization
  if auth then
    local ak = match(auth, "Access=([^,%s]+)")
    if ak then return "ak:" .. ak end
  end
  return "tok:" .. (ngx.var.http_x_auth_token or "")
end

--- Count this request against its user's window.
-- @return nil when allowed; else status, body, headers of the 429
function M.check(cfg, ep)
  local rl = cfg.rate_limit
  if type(rl) ~= "table" or ep == "token" then return nil end
  local window, limit = rl.window, rl.limit
  local now = ngx.now()
  local idx = floor(now / window)
  local key = ngx.md5(user()) .. ":" .. idx
  local n = RL:incr(key, 1, 0, ceil(window * 2))
  if n <= limit then return nil end
  C:incr("throttled", 1, 0)
  C:incr("throttled:" .. ep, 1, 0)
  local retry = ceil((idx + 1) * window - now)
  if retry < 1 then retry = 1 end
  return 429, util.err("APIGW.0308", "The throttling threshold has been reached: policy user over ratelimit,limit:"
    .. limit .. ",time:" .. span(window)), { ["Retry-After"] = tostring(retry) }
end

return M
