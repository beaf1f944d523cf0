-- Per-instance and per-phone state that operations change: boots (reboot,
-- reset, CPH restart/reset), backups, installed apps. Only what changed is
-- stored (kp_state shared dict); an untouched instance is running with the
-- system apps. No timers: each change stores its times and the status is
-- derived when asked.
--   "i:<id>"  instance boot     "<start>\t<end>"
--   "b:<id>"  instance backup   "<start>\t<end>\t<1|0 ok>"
--   "a:<id>"  installed apps    lines "<pkg>\t<version>\t<name>\t<ready time>"
--   "p:<id>"  phone operation   "<restart|reset>\t<start>\t<end>\t<1|0 ok>"
local util = require "koophone_emulator.util"

local ngx = ngx
local S = ngx.shared.kp_state
local match, tonumber, format, concat = string.match, tonumber, string.format, table.concat

local M = {}

-- KooPhone instance status (batch-query-status, SDK StatusResult):
-- 0 unknown, 1 stopped, 2 running, 3 going offline, 4 starting, 5 shut down
M.RUNNING, M.STARTING, M.UNKNOWN = 2, 4, 0

-- the system apps every instance has (app_type 1)
M.SYSTEM_APPS = {
  { "Settings", "com.android.settings", "12" },
  { "Phone", "com.android.phone", "12" },
  { "System UI", "com.android.systemui", "12" },
  { "Launcher3", "com.android.launcher3", "12" },
  { "Contacts Storage", "com.android.providers.contacts", "12" },
  { "Android Keyboard", "com.android.inputmethod.latin", "12" },
  { "Chrome", "com.android.chrome", "108.0.5359.128" },
  { "Cloud Phone Agent", "com.huawei.cloudphone.agent", "1.0.0" },
}

--- An instance starts booting now and runs again after `dur` seconds.
function M.boot(id, now, dur)
  S:set("i:" .. id, format("%.3f\t%.3f", now, now + dur))
end

--- The instance's status code at `now`.
function M.instance_status(id, now)
  local v = S:get("i:" .. id)
  if not v then return M.RUNNING end
  local _, e = match(v, "^([^\t]+)\t([^\t]+)$")
  if now < tonumber(e) then return M.STARTING end
  return M.RUNNING
end

--- Record a backup job of an instance.
function M.backup(id, now, dur, ok)
  S:set("b:" .. id, format("%.3f\t%.3f\t%d", now, now + dur, ok and 1 or 0))
end

--- backup_status (0 preparing, 1 running, 2 success, 3 failed) and its time, or nil.
function M.backup_status(id, now)
  local v = S:get("b:" .. id)
  if not v then return nil end
  local s, e, ok = match(v, "^([^\t]+)\t([^\t]+)\t(%d)$")
  s, e = tonumber(s), tonumber(e)
  if now < e then return 1, util.iso(s) end
  return ok == "1" and 2 or 3, util.iso(e)
end

--- Forget the installed apps (reset).
function M.clear_apps(id)
  S:delete("a:" .. id)
end

--- Add (or upgrade) an app that becomes visible at `ready`.
function M.add_app(id, pkg, version, name, ready)
  -- tabs and newlines separate the stored fields
  pkg = (pkg:gsub("[\t\n]", " "))
  version = (version:gsub("[\t\n]", " "))
  name = (name:gsub("[\t\n]", " "))
  local key = "a:" .. id
  local old = S:get(key)
  local lines = {}
  if old then
    for line in old:gmatch("[^\n]+") do
      if match(line, "^([^\t]*)") ~= pkg then lines[#lines + 1] = line end
    end
  end
  lines[#lines + 1] = pkg .. "\t" .. version .. "\t" .. name .. "\t" .. format("%.3f", ready)
  S:set(key, concat(lines, "\n"))
end

--- The apps of an instance at `now`: a list of {app_name, app_version,
-- app_pkg, icon_url, app_type}; app_type 1 system, 2 installed.
function M.apps(id, now, app_type)
  local out = {}
  if app_type == nil or app_type == 1 then
    for _, a in ipairs(M.SYSTEM_APPS) do
      out[#out + 1] = { app_name = a[1], app_pkg = a[2], app_version = a[3], icon_url = "", app_type = 1 }
    end
  end
  if app_type == nil or app_type == 2 then
    local v = S:get("a:" .. id)
    if v then
      for line in v:gmatch("[^\n]+") do
        local pkg, ver, name, ready = match(line, "^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]+)$")
        if pkg and now >= tonumber(ready) then
          out[#out + 1] = { app_name = name, app_pkg = pkg, app_version = ver, icon_url = "", app_type = 2 }
        end
      end
    end
  end
  return out
end

--- A CPH phone restart or reset: restarting/resetting until `now + dur`,
-- then running (ok) or failed.
function M.phone_op(id, kind, now, dur, ok)
  S:set("p:" .. id, format("%s\t%.3f\t%.3f\t%d", kind, now, now + dur, ok and 1 or 0))
end

-- CPH phone status (Go SDK model_phone.go): 1 creating, 2 running,
-- 3 resetting, 4 restarting, 6 frozen, 7 shutting down, 8 shut down,
-- -5 reset failed, -6 restart failed, -7 abnormal, -8 create failed, -9 shutdown failed
--- The phone's status code at `now` and the time it last changed (or nil).
function M.phone_status(id, now)
  local v = S:get("p:" .. id)
  if not v then return 2 end
  local kind, s, e, ok = match(v, "^(%a+)\t([^\t]+)\t([^\t]+)\t(%d)$")
  s, e = tonumber(s), tonumber(e)
  if now < e then return kind == "reset" and 3 or 4, s end
  if ok == "1" then return 2, e end
  return kind == "reset" and -5 or -6, e
end

--- Status codes of the phones whose state was ever changed: id -> status.
function M.touched_phones(now)
  local out = {}
  for _, key in ipairs(S:get_keys(0)) do
    local id = match(key, "^p:(.+)$")
    if id then out[id] = (M.phone_status(id, now)) end
  end
  return out
end

function M.flush()
  S:flush_all()
  S:flush_expired(0)
end

return M
