-- The control API under /_emulator/ (no auth, JSON in and out).
local util = require "koophone_emulator.util"
local config = require "koophone_emulator.config"
local acct = require "koophone_emulator.accounting"
local faults = require "koophone_emulator.faults"

local ngx = ngx

local M = {}

local function reply(status, t)
  return util.send(status, t)
end

-- encode a list, [] when empty
local function list_json(key, list, extra)
  local t = extra or {}
  if #list == 0 then
    t[key] = false
    return (util.encode(t):gsub('"' .. key .. '":false', '"' .. key .. '":[]'))
  end
  t[key] = list
  return util.encode(t)
end

local function shq(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local routes = {}

routes["GET /_emulator/health"] = function() return reply(200, { ok = true }) end

routes["GET /_emulator/config"] = function()
  return util.send(200, config.effective_json())
end

routes["POST /_emulator/config"] = function()
  local body, err = util.read_json()
  if not body then return reply(400, { error = err }) end
  if body.faults ~= nil then
    if type(body.faults) ~= "table" then return reply(400, { error = "faults must be a list" }) end
    for i, f in ipairs(body.faults) do
      local ok, ferr = faults.validate(f)
      if not ok then return reply(400, { error = "faults[" .. i .. "]: " .. ferr }) end
    end
  end
  local cfg, cerr = config.update(body)
  if not cfg then return reply(400, { error = cerr }) end
  if body.faults ~= nil then faults.install(body.faults) end
  return util.send(200, config.effective_json())
end

routes["GET /_emulator/faults"] = function()
  return util.send(200, list_json("faults", faults.list()))
end

routes["POST /_emulator/faults"] = function()
  local data = util.read_body()
  local body = util.decode(data)
  if type(body) ~= "table" then return reply(400, { error = "body must be a fault object or a list of faults" }) end
  local added, err = faults.add(body)
  if not added then return reply(400, { error = err }) end
  return util.send(200, list_json("faults", faults.list(), { added = #added }))
end

routes["DELETE /_emulator/faults"] = function()
  faults.clear()
  return util.send(200, '{"faults":[]}')
end

routes["GET /_emulator/requests"] = function()
  local args = ngx.req.get_uri_args()
  local ep = type(args.endpoint) == "string" and args.endpoint or nil
  local limit = tonumber(args.limit)
  local list = acct.requests(ep, limit)
  return util.send(200, list_json("requests", list, { count = #list }))
end

routes["GET /_emulator/executions"] = function()
  local args = ngx.req.get_uri_args()
  local inst = type(args.instance) == "string" and args.instance or nil
  return reply(200, acct.executions(inst))
end

routes["GET /_emulator/stats"] = function() return reply(200, acct.stats()) end

routes["POST /_emulator/reset"] = function()
  local cfg = config.restore()
  faults.install(cfg.faults)
  acct.reset()
  ngx.shared.kp_tasks:flush_all(); ngx.shared.kp_tasks:flush_expired(0)
  ngx.shared.kp_jobs:flush_all(); ngx.shared.kp_jobs:flush_expired(0)
  require("koophone_emulator.state").flush()
  ngx.shared.kp_rl:flush_all(); ngx.shared.kp_rl:flush_expired(0)
  return reply(200, { ok = true })
end

-- shell lines for `koophone-emulator start --env`
routes["GET /_emulator/env"] = function()
  local cfg = config.get()
  local url = ngx.var.scheme .. "://127.0.0.1:" .. ngx.var.server_port
  local lines = {
    "export KOOPHONE_ENDPOINT=" .. shq(url),
    "export KOOPHONE_CPH_ENDPOINT=" .. shq(url),
    "export KOOPHONE_TOKEN=" .. shq(cfg.token),
    "export KOOPHONE_PROJECT_ID=" .. shq(cfg.project_id),
  }
  if ngx.var.scheme == "https" then
    lines[#lines + 1] = "export KOOPHONE_CA_FILE=" .. shq(ngx.config.prefix():gsub("/$", "") .. "/cert.pem")
  end
  ngx.header["Content-Type"] = "text/plain"
  ngx.print(table.concat(lines, "\n") .. "\n")
end

function M.handle(uri)
  local method = ngx.req.get_method()
  local h = routes[method .. " " .. uri]
  if h then return h() end
  for key in pairs(routes) do
    if key:match("^%u+ (.*)$") == uri then
      return reply(405, { error = "method " .. method .. " not allowed on " .. uri })
    end
  end
  return reply(404, { error = "no such control endpoint: " .. uri })
end

return M
