-- The fleet (which ids exist) and what a command does on an instance:
-- status, error code/message, output and how long it takes.
local util = require "koophone_emulator.util"

local match, find, tonumber = string.match, string.find, tonumber

local M = {}

function M.is_instance(cfg, id)
  local n = match(id, "^kp(%d%d%d%d%d%d)$")
  if n then return tonumber(n) < cfg.fleet.instances end
  return cfg._extra_instances[id] == true or cfg.overrides[id] ~= nil
end

function M.is_phone(cfg, id)
  local n = match(id, "^ph(%d%d%d%d%d%d)$")
  if n then return tonumber(n) < cfg.fleet.phones end
  return cfg._extra_phones[id] == true or cfg.overrides[id] ~= nil
end

--- Does an install on this instance report success without landing?
-- (scenario install_silent_fail: listed instances, or a seeded fraction)
function M.install_silently_fails(cfg, id)
  if cfg._silent[id] then return true end
  local sf = cfg.install_silent_fail
  local r = type(sf) == "table" and tonumber(sf.ratio) or 0
  return r > 0 and util.fraction(cfg.seed, "silent-install", id) < r
end

--- How many instances (kind "instance") or phones ("phone") the fleet lists.
function M.count(cfg, kind)
  if kind == "phone" then return cfg.fleet.phones + #cfg._phone_extras end
  return cfg.fleet.instances + #cfg._instance_extras
end

--- The i-th (1-based) id of the listed fleet: numbered ids, then the others.
function M.id_at(cfg, kind, i)
  local n = kind == "phone" and cfg.fleet.phones or cfg.fleet.instances
  if i <= n then return string.format(kind == "phone" and "ph%06d" or "kp%06d", i - 1) end
  return (kind == "phone" and cfg._phone_extras or cfg._instance_extras)[i - n]
end

--- The 1-based index of an id in the listed fleet, or nil.
function M.index_of(cfg, kind, id)
  local phone = kind == "phone"
  local n = match(id, phone and "^ph(%d%d%d%d%d%d)$" or "^kp(%d%d%d%d%d%d)$")
  local size = phone and cfg.fleet.phones or cfg.fleet.instances
  if n then
    n = tonumber(n)
    return n < size and n + 1 or nil
  end
  for j, x in ipairs(phone and cfg._phone_extras or cfg._instance_extras) do
    if x == id then return size + j end
  end
  return nil
end

local LS_SYSTEM = table.concat({
  "total 112",
  "drwxr-xr-x  62 root root  4096 2009-01-01 08:00 app",
  "drwxr-xr-x   3 root shell 8192 2009-01-01 08:00 bin",
  "-rw-------   1 root root  3518 2009-01-01 08:00 build.prop",
  "drwxr-xr-x  12 root root  4096 2009-01-01 08:00 etc",
  "drwxr-xr-x   2 root root  8192 2009-01-01 08:00 fonts",
  "drwxr-xr-x   6 root root  8192 2009-01-01 08:00 framework",
  "drwxr-xr-x   7 root root 12288 2009-01-01 08:00 lib",
  "drwxr-xr-x   6 root root 12288 2009-01-01 08:00 lib64",
  "drwxr-xr-x  41 root root  4096 2009-01-01 08:00 priv-app",
  "drwxr-xr-x   3 root root  4096 2009-01-01 08:00 usr",
  "drwxr-xr-x   2 root shell 4096 2009-01-01 08:00 xbin",
}, "\n")

local PACKAGES = table.concat({
  "package:com.android.settings",
  "package:com.android.phone",
  "package:com.android.systemui",
  "package:com.android.launcher3",
  "package:com.android.providers.contacts",
  "package:com.android.inputmethod.latin",
  "package:com.android.chrome",
  "package:com.huawei.cloudphone.agent",
}, "\n")

local GETPROP = {
  ["ro.build.version.release"] = "12",
  ["ro.build.version.sdk"] = "31",
  ["ro.product.model"] = "KooPhone",
  ["ro.product.manufacturer"] = "HUAWEI",
  ["ro.product.cpu.abi"] = "arm64-v8a",
}

-- built-in behaviour: output, specific duration (or nil)
local function builtin(cfg, id, cmd)
  local n = match(cmd, "^sleep%s+(%d+%.?%d*)%s*$")
  if n then return "", math.min(tonumber(n), cfg.max_sleep) end
  if cmd == "ls -l /system" then return LS_SYSTEM end
  local prop = match(cmd, "^getprop%s+(%S+)%s*$")
  if prop then
    if prop == "ro.serialno" then return id end
    return GETPROP[prop] or ""
  end
  if find(cmd, "^pm list packages") then return PACKAGES end
  local text = match(cmd, "^echo%s+(.*)$")
  if text then
    local q = match(text, '^"(.*)"$') or match(text, "^'(.*)'$")
    return q or text
  end
  if cmd == "echo" then return "" end
  if find(cmd, "^install ") then return "Success" end
  if cmd == "restart" then return nil end
  return ""
end

local function override_for(cfg, id, cmd)
  local o = cfg.overrides[id]
  if type(o) ~= "table" then return nil end
  local list = util.is_array(o) and next(o) ~= nil and o or { o }
  for _, e in ipairs(list) do
    if type(e) == "table" then
      if e.command ~= nil then
        if e.command == cmd then return e end
      elseif e.match ~= nil then
        if type(e.match) == "string" and find(cmd, e.match) then return e end
      else
        return e
      end
    end
  end
  return nil
end

-- What running cmd on id gives. kind: "instance" or "phone".
-- Returns a table {status, error_code, error_msg, execute_msg (nil = JSON null),
-- duration (nil = not specific), executed (boolean), unknown (boolean)}.
function M.outcome(cfg, id, cmd, kind)
  local known
  if kind == "phone" then known = M.is_phone(cfg, id) else known = M.is_instance(cfg, id) end
  if not known then
    return { status = -1, error_code = "CPS0005", error_msg = "Phone not found.", duration = 0,
             executed = false, unknown = true }
  end
  local out, dur = builtin(cfg, id, cmd)
  local status, ec, em = 2, "", ""
  for _, c in ipairs(cfg.commands) do
    if find(cmd, c.match) then
      if c.output ~= nil then out = c.output end
      if c.duration ~= nil then dur = tonumber(c.duration) end
      if c.status ~= nil then status = tonumber(c.status) or status end
      if c.error_code ~= nil then ec = c.error_code end
      if c.error_msg ~= nil then em = c.error_msg end
      break
    end
  end
  local r = { status = status, error_code = ec, error_msg = em, execute_msg = out, duration = dur, executed = true }
  local o = override_for(cfg, id, cmd)
  if o then
    r.status = tonumber(o.status) or -1
    if r.status == 2 then
      r.error_code, r.error_msg = o.error_code or "", o.error_msg or ""
    else
      r.error_code, r.error_msg = o.error_code or "CPS.0191", o.error_msg or "Run command failed."
    end
    if o.execute_msg ~= nil then r.execute_msg = o.execute_msg end
    if o.duration ~= nil then r.duration = tonumber(o.duration) end
  elseif r.status == 2 and cfg.fail_ratio > 0 and util.fraction(cfg.seed, id, cmd) < cfg.fail_ratio then
    r.status, r.error_code, r.error_msg = -1, "CPS.0191", "Run command failed."
  end
  if r.execute_msg == util.null then r.execute_msg = nil end
  if r.execute_msg ~= nil then
    r.execute_msg = util.truncate(tostring(r.execute_msg), cfg.max_execute_msg or 1024)
  end
  return r
end

return M
