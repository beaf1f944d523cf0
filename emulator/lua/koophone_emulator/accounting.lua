-- Accounting: request counters, in-flight/peak, distinct connections, the
-- request log and the execution counts.
local util = require "koophone_emulator.util"

local ngx = ngx
local C = ngx.shared.kp_counters   -- cleared by reset
local L = ngx.shared.kp_live       -- in-flight gauges: never cleared
local R = ngx.shared.kp_reqlog     -- seq -> JSON entry
local X = ngx.shared.kp_exec       -- "id\tcommand" -> count
local CONN = ngx.shared.kp_conns   -- connection serial -> true

local M = {}

-- a vendor request starts; returns (seq of this endpoint, global seq)
function M.begin(ep)
  local total = C:incr("requests", 1, 0)
  local seq = C:incr("ep:" .. ep, 1, 0)
  local n = L:incr("inflight", 1, 0)
  if n > (C:get("peak") or 0) then C:set("peak", n) end
  local ne = L:incr("if:" .. ep, 1, 0)
  if ne > (C:get("peak:" .. ep) or 0) then C:set("peak:" .. ep, ne) end
  if CONN:safe_add(ngx.var.connection, true) then C:incr("connections", 1, 0) end
  local ctx = ngx.ctx
  ctx.ep = ep
  ctx.t0 = ngx.now()
  return seq, total
end

-- log phase
function M.finish()
  local ctx = ngx.ctx
  local ep = ctx.ep
  if not ep then return end
  L:incr("inflight", -1, 0)
  L:incr("if:" .. ep, -1, 0)
  local seq = C:incr("reqseq", 1, 0)
  local h = ngx.req.get_headers(100)
  if h["x-auth-token"] then h["x-auth-token"] = "<redacted>" end
  local entry = util.encode {
    seq = seq, time = ctx.t0, method = ngx.req.get_method(), path = ngx.var.request_uri,
    endpoint = ep, headers = h,
    body_size = ctx.body_size or tonumber(ngx.var.http_content_length) or 0,
    status = ngx.status,
  }
  R:set(seq, entry)
  local max = ctx.log_max or 100000
  if seq > max then R:delete(seq - max) end
end

function M.exec(id, cmd)
  X:incr(id .. "\t" .. cmd, 1, 0)
  C:incr("exec_total", 1, 0)
end

function M.requests(endpoint, limit)
  local last = C:get("reqseq") or 0
  local out = {}
  limit = limit or math.huge
  local seq = last
  while seq >= 1 and #out < limit do
    local v = R:get(seq)
    if not v then break end
    local e = util.decode(v)
    if e and (not endpoint or e.endpoint == endpoint) then out[#out + 1] = e end
    seq = seq - 1
  end
  -- oldest first
  local n = #out
  for i = 1, math.floor(n / 2) do out[i], out[n - i + 1] = out[n - i + 1], out[i] end
  return out
end

function M.executions(instance)
  local res, max, total = {}, 0, 0
  for _, key in ipairs(X:get_keys(0)) do
    local id, cmd = key:match("^(.-)\t(.*)$")
    if id and (not instance or instance == id) then
      local n = X:get(key) or 0
      res[id] = res[id] or {}
      res[id][cmd] = n
      total = total + n
      if n > max then max = n end
    end
  end
  if not instance then total = C:get("exec_total") or total end
  return { total = total, max = max, executions = res }
end

function M.stats()
  local by, peak_by, thr_by = {}, {}, {}
  for _, key in ipairs(C:get_keys(0)) do
    local ep = key:match("^ep:(.*)$")
    if ep then by[ep] = C:get(key) end
    ep = key:match("^throttled:(.*)$")
    if ep then thr_by[ep] = C:get(key) end
    ep = key:match("^peak:(.*)$")
    if ep then peak_by[ep] = C:get(key) end
  end
  return {
    requests = C:get("requests") or 0,
    by_endpoint = by,
    inflight = L:get("inflight") or 0,
    peak_inflight = C:get("peak") or 0,
    peak_inflight_by_endpoint = peak_by,
    connections = C:get("connections") or 0,
    executions = C:get("exec_total") or 0,
    -- 429s answered by the scenario's rate_limit (not by 429 faults)
    throttled = C:get("throttled") or 0,
    throttled_by_endpoint = thr_by,
    aksk = require("koophone_emulator.aksk").stats(),
  }
end

function M.reset()
  for _, d in ipairs { C, R, X, CONN } do d:flush_all(); d:flush_expired(0) end
  C:set("peak", L:get("inflight") or 0)
end

return M
