-- Configuration: defaults, scenario file, start options, run-time merges.
-- The base config (defaults + scenario + options) and the effective config are
-- stored as JSON in the kp_config shared dict; each worker caches the decoded
-- effective config and reloads it when the version counter changes.
local util = require "koophone_emulator.util"

local ngx = ngx
local D = ngx.shared.kp_config

local M = {}

M.defaults = {
  seed = 42,
  token = "emulator-token",
  project_id = "emulator-project",
  project_name = "cn-east-3",
  token_ttl = 86400,
  iam = { user = "emulator-user", password = "emulator-password", domain = "emulator-domain" },
  -- accepted AK/SK pairs (a pair may also hold security_token: temporary
  -- credentials); clock_offset skews the gateway's clock (seconds)
  aksk = { { ak = "emulator-ak", sk = "emulator-sk" } },
  clock_offset = 0,
  fleet = {
    instances = 10000, phones = 10000,
    -- the ids used by the vendor pages' examples
    extra_instances = { "a44uhlf7", "efjy72gs", "XvH39QVW", "Vpp8rC4Y" },
    extra_phones = { "a7f3a1c5258347d6b6f1def79e11f2bc", "1678567b8bab40f93711234cb80d0764",
                     "1234567b8bab40ffb711234cb80d0234" },
  },
  latency = { default = 0 },
  durations = { default = 1.0 },
  -- seconds a task's and its jobs' records are kept after the task ends
  retention = 300,
  commands = {},
  fail_ratio = 0,
  overrides = {
    -- reproduces the sync-command page's example
    a44uhlf7 = { command = "ls -l /system", status = -1, error_code = "CPS.0191",
                 error_msg = "Run command failed.",
                 execute_msg = "ls: cannot access '/system': No such file or directory" },
  },
  faults = {},
  strict_command_charset = false,
  max_app_size_mb = 4096,
  max_restart_phones = 200,
  max_sleep = 60,
  max_execute_msg = 1024,
  request_log_max = 100000,
  -- "seed" (the seed pages' shapes) or "sdk" (the Java SDK >= 3.1.207: flat
  -- install reply, FULFILL task ids, install jobs 0 -> 1 -> 2/3)
  vendor = "seed",
  -- error bodies: "error_code" | "errorCode" | "code" | "nested"
  error_style = "error_code",
  -- per-user gateway throttling, e.g. {limit = 200, window = 300}; off when absent
  rate_limit = nil,
  -- installs that report success but never land: {ratio = 0.05, instances = {...}}
  install_silent_fail = nil,
  max_instance_ids = 100,   -- reboot, batch-reset, backup, batch-query-status
  max_page_size = 200,      -- batch-query and app-list
}

-- two-level merge: objects merge key by key at the top level and one level
-- below; lists and scalars replace; JSON null removes a key.
local function merge(dst, src)
  for k, v in pairs(src) do
    if v == util.null then
      dst[k] = nil
    elseif type(v) == "table" and util.is_object(v) and next(v) ~= nil
        and type(dst[k]) == "table" and util.is_object(dst[k]) then
      for k2, v2 in pairs(v) do
        if v2 == util.null then dst[k][k2] = nil else dst[k][k2] = util.deepcopy(v2) end
      end
    else
      dst[k] = util.deepcopy(v)
    end
  end
  return dst
end
M.merge = merge

local function check(cfg)
  if type(cfg.token) ~= "string" or cfg.token == "" then error("config: token must be a non-empty string", 0) end
  if type(cfg.project_id) ~= "string" then error("config: project_id must be a string", 0) end
  for _, k in ipairs { "seed", "token_ttl", "fail_ratio", "max_app_size_mb", "max_restart_phones", "max_sleep", "retention" } do
    if type(cfg[k]) ~= "number" then error("config: " .. k .. " must be a number", 0) end
  end
  if type(cfg.fleet) ~= "table" or type(cfg.fleet.instances) ~= "number" or type(cfg.fleet.phones) ~= "number" then
    error("config: fleet.instances and fleet.phones must be numbers", 0)
  end
  for _, k in ipairs { "latency", "durations", "overrides", "iam" } do
    if type(cfg[k]) ~= "table" then error("config: " .. k .. " must be an object", 0) end
  end
  if type(cfg.commands) ~= "table" then error("config: commands must be a list", 0) end
  for i, c in ipairs(cfg.commands) do
    if type(c) ~= "table" or type(c.match) ~= "string" then error("config: commands[" .. i .. "].match must be a string", 0) end
    local ok = pcall(string.find, "", c.match)
    if not ok then error("config: commands[" .. i .. "].match is not a valid Lua pattern", 0) end
  end
  if type(cfg.faults) ~= "table" then error("config: faults must be a list", 0) end
  if type(cfg.clock_offset) ~= "number" then error("config: clock_offset must be a number", 0) end
  if type(cfg.aksk) ~= "table" then error("config: aksk must be a list", 0) end
  for i, p in ipairs(cfg.aksk) do
    if type(p) ~= "table" or type(p.ak) ~= "string" or type(p.sk) ~= "string" or p.ak == "" or p.sk == "" then
      error("config: aksk[" .. i .. "] must be {ak=, sk=} with non-empty strings", 0)
    end
  end
  if cfg.vendor ~= "seed" and cfg.vendor ~= "sdk" then error("config: vendor must be \"seed\" or \"sdk\"", 0) end
  local styles = { error_code = true, errorCode = true, code = true, nested = true }
  if not styles[cfg.error_style] then
    error("config: error_style must be one of error_code, errorCode, code, nested", 0)
  end
  local rl = cfg.rate_limit
  if rl ~= nil then
    if type(rl) ~= "table" or type(rl.limit) ~= "number" or rl.limit < 1
        or type(rl.window) ~= "number" or rl.window <= 0 then
      error("config: rate_limit must be {limit = number >= 1, window = seconds > 0}", 0)
    end
  end
  local sf = cfg.install_silent_fail
  if sf ~= nil then
    if type(sf) ~= "table" or (sf.ratio ~= nil and (type(sf.ratio) ~= "number" or sf.ratio < 0 or sf.ratio > 1))
        or (sf.instances ~= nil and type(sf.instances) ~= "table") then
      error("config: install_silent_fail must be {ratio = 0..1, instances = [ids]}", 0)
    end
  end
  for _, k in ipairs { "max_instance_ids", "max_page_size" } do
    if type(cfg[k]) ~= "number" or cfg[k] < 1 then error("config: " .. k .. " must be a number >= 1", 0) end
  end
  return cfg
end
M.check = check

-- called from init_by_lua (master process)
function M.init()
  local cfg = util.deepcopy(M.defaults)
  local file = os.getenv("KOOPHONE_EMU_SCENARIO")
  if file and file ~= "" then
    local f, err = io.open(file, "rb")
    if not f then error("cannot read scenario " .. file .. ": " .. tostring(err), 0) end
    local text = f:read("*a"); f:close()
    local scen, derr = util.decode(text)
    if type(scen) ~= "table" then error("scenario " .. file .. " is not valid JSON: " .. tostring(derr), 0) end
    merge(cfg, scen)
  end
  local token = os.getenv("KOOPHONE_EMU_TOKEN")
  if token and token ~= "" then cfg.token = token end
  local pid = os.getenv("KOOPHONE_EMU_PROJECT_ID")
  if pid and pid ~= "" then cfg.project_id = pid end
  local fleet = tonumber(os.getenv("KOOPHONE_EMU_FLEET") or "")
  if fleet then cfg.fleet.instances = fleet; cfg.fleet.phones = fleet end
  check(cfg)
  local json = util.encode(cfg)
  D:set("base", json)
  D:set("effective", json)
  D:set("version", 1)
  local ok, ferr = require("koophone_emulator.faults").install(cfg.faults)
  if not ok then error("config: " .. ferr, 0) end
end

-- per-worker cache
local cached, cached_ver = nil, nil

local function prepare(cfg)
  local inst, ph = {}, {}
  for _, id in ipairs(cfg.fleet.extra_instances or {}) do inst[id] = true end
  for _, id in ipairs(cfg.fleet.extra_phones or {}) do ph[id] = true end
  cfg._extra_instances = inst
  cfg._extra_phones = ph
  local silent = {}
  local sf = cfg.install_silent_fail
  if type(sf) == "table" and type(sf.instances) == "table" then
    for _, id in ipairs(sf.instances) do silent[id] = true end
  end
  cfg._silent = silent
  -- the listed fleet: numbered ids first, then the other known ids, sorted
  local ilist, plist = {}, {}
  for id in pairs(inst) do ilist[#ilist + 1] = id end
  for id in pairs(ph) do plist[#plist + 1] = id end
  for id in pairs(cfg.overrides) do
    -- an override id counts for both kinds unless it is a known id of the other
    if not id:match("^kp%d%d%d%d%d%d$") and not inst[id] and not ph[id] then ilist[#ilist + 1] = id end
    if not id:match("^ph%d%d%d%d%d%d$") and not ph[id] and not inst[id] then plist[#plist + 1] = id end
  end
  table.sort(ilist)
  table.sort(plist)
  cfg._instance_extras, cfg._phone_extras = ilist, plist
  return cfg
end

function M.get()
  local ver = D:get("version")
  if ver ~= cached_ver then
    cached = prepare(util.decode(D:get("effective")))
    cached_ver = ver
  end
  return cached
end

function M.effective_json() return D:get("effective") end

-- merge a partial scenario at run time; returns the new config or nil, err
function M.update(partial)
  local cfg = util.decode(D:get("effective"))
  merge(cfg, partial)
  local ok, err = pcall(check, cfg)
  if not ok then return nil, err end
  D:set("effective", util.encode(cfg))
  D:incr("version", 1, 0)
  return cfg
end

function M.restore()
  local base = D:get("base")
  D:set("effective", base)
  D:incr("version", 1, 0)
  return util.decode(base)
end

return M
