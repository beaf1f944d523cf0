-- Entry point for every request: routes, auth, mandatory headers, latency,
-- faults and accounting around the API handlers.
local util = require "koophone_emulator.util"
local config = require "koophone_emulator.config"
local acct = require "koophone_emulator.accounting"
local faults = require "koophone_emulator.faults"
local iam = require "koophone_emulator.iam"
local aksk = require "koophone_emulator.aksk"
local kp = require "koophone_emulator.kp"
local cph = require "koophone_emulator.cph"
local instances = require "koophone_emulator.instances"
local ratelimit = require "koophone_emulator.ratelimit"

local ngx = ngx
local sub, match = string.sub, string.match

local M = {}

local HANDLERS = {
  ["sync-command"] = kp.sync, ["async-command"] = kp.async, task = kp.task, install = kp.install,
  restart = cph.restart, job = cph.job, jobs = cph.jobs, token = iam.token, projects = iam.projects,
  reboot = instances.reboot, reset = instances.reset, backup = instances.backup, status = instances.status,
  instances = instances.list, apps = instances.apps,
  phone = cph.phone, phones = cph.phones, ["phone-reset"] = cph.reset,
}
-- endpoints whose page (or SDK: app-list) marks the x-request-id header mandatory;
-- batch-query wants it as a query parameter (instances.list checks it)
local NEED_RID = { ["sync-command"] = true, ["async-command"] = true, task = true, apps = true }

-- the operations from the vendor's SDKs (docs/vendor.md)
local KP_SDK = { reboot = "reboot", ["batch-reset"] = "reset", backup = "backup",
                 ["batch-query-status"] = "status", ["batch-query"] = "instances" }
local KP_SDK_METHOD = { instances = "GET" }

-- returns endpoint, expected method, path argument, project id
local function route(uri)
  if sub(uri, 1, 14) == "/v1/instances/" then
    local rest = sub(uri, 15)
    if sub(rest, 1, 6) == "tasks/" then
      local id = sub(rest, 7)
      if id ~= "" and not id:find("/", 1, true) then return "task", "GET", id end
      return nil
    end
    if rest == "sync-command" then return "sync-command", "POST" end
    if rest == "async-command" then return "async-command", "POST" end
    if rest == "app/install" then return "install", "POST" end
    local op = KP_SDK[rest]
    if op then return op, KP_SDK_METHOD[op] or "POST" end
    local iid = match(rest, "^([^/]+)/app%-list$")
    if iid then return "apps", "GET", iid end
    return nil
  end
  if uri == "/v3/auth/tokens" then return "token", "POST" end
  if uri == "/v3/projects" then return "projects", "GET" end
  local pid, tail = match(uri, "^/v1/([^/]+)/cloud%-phone/(.+)$")
  if not pid then return nil end
  if tail == "phones/batch-restart" then return "restart", "POST", nil, pid end
  if tail == "jobs" then return "jobs", "GET", nil, pid end
  if tail == "phones/batch-reset" then return "phone-reset", "POST", nil, pid end
  if tail == "phones" then return "phones", "GET", nil, pid end
  local phid = match(tail, "^phones/([^/]+)$")
  if phid then return "phone", "GET", phid, pid end
  local jid = match(tail, "^jobs/([^/]+)$")
  if jid then return "job", "GET", jid, pid end
  return nil
end

local function request_id()
  local rid = ngx.var.http_x_request_id
  if rid and rid ~= "" then return rid, true end
  return util.hex32(ngx.worker.pid(), "rid", util.reserve("rid", 1) .. ngx.now()), false
end

local function error_reply(fam, status, code, msg)
  if fam == "iam" then
    local titles = { [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found", [405] = "Method Not Allowed" }
    return util.send(status, util.iam_err(status, msg, titles[status]))
  end
  return util.send(status, util.err(code, msg))
end

function M.handle()
  local uri = ngx.var.uri
  if sub(uri, 1, 10) == "/_emulator" then
    return require("koophone_emulator.control").handle(uri)
  end
  local cfg = config.get()
  ngx.ctx.log_max = cfg.request_log_max
  ngx.ctx.error_style = cfg.error_style
  -- a skewed clock shows in every reply's Date (nginx sets the true one)
  if cfg.clock_offset ~= 0 then ngx.header["Date"] = ngx.http_time(math.floor(aksk.now(cfg))) end
  local rid, given = request_id()
  ngx.header["X-Request-Id"] = rid
  local ep, want, arg, pid = route(uri)
  if not ep then
    acct.begin("unknown")
    return util.send(404, util.err("APIG.0101", "The API does not exist or has not been published in the environment."))
  end
  local seq, total = acct.begin(ep)
  local fam = util.family[ep]
  local method = ngx.req.get_method()
  if method ~= want then
    ngx.header["Allow"] = want
    if fam == "kp" then return error_reply(fam, 405, "KOOPHONE.API.1000", "Method " .. method .. " is not allowed.") end
    return error_reply(fam, 405, "CPS.0004", "Method " .. method .. " is not allowed.")
  end

  local fault = faults.pick(cfg, ep, seq, total)
  if fault and fault.when == "before"
      and (fault.kind == "500" or fault.kind == "503" or fault.kind == "429" or fault.kind == "reset" or fault.kind == "stall") then
    return faults.apply(fault, ep)
  end

  local lat = cfg.latency[ep] or cfg.latency["*"] or cfg.latency.default
  if lat and lat > 0 then ngx.sleep(lat) end

  local authz = ngx.var.http_authorization
  if ep ~= "token" and authz and sub(authz, 1, 16) == "SDK-HMAC-SHA256 " then
    local body = ngx.req.get_method() ~= "GET" and util.read_body() or ""
    local ok, msg = aksk.verify(cfg, authz, body)
    if not ok then
      return util.send(401, { error_code = "APIGW.0301", error_msg = msg, request_id = rid })
    end
  elseif ep ~= "token" and not iam.valid(cfg, ngx.var.http_x_auth_token) then
    if fam == "kp" then
      return error_reply(fam, 401, "KOOPHONE.API.0401", "Unauthorized: invalid or expired token.")
    end
    return error_reply(fam, 401, "CPS.0001", "Unauthorized: invalid or expired token.")
  end
  if pid and pid ~= cfg.project_id then
    return error_reply(fam, 403, "CPS.0002", "Forbidden: project_id " .. pid .. " does not match the token's project.")
  end
  local st, tb, th = ratelimit.check(cfg, ep)
  if st then return util.send(st, tb, th) end
  if NEED_RID[ep] and not given then
    return error_reply(fam, 400, "KOOPHONE.API.1000", "Missing mandatory header: x-request-id.")
  end

  local status, body, headers = HANDLERS[ep](cfg, arg)
  if fault then return faults.apply(fault, ep, status, body, headers) end
  return util.send(status, body, headers)
end

function M.log()
  return acct.finish()
end

return M
