--- bench/instances_rss.lua: `client:each_instance()` over 100,000 emulated
-- instances keeps the process's peak RSS under 64 MB (the iterator holds
-- one page at a time).
--
--   LUA_PATH="lua/?.lua;lua/?/init.lua;./?.lua;;" LUA_CPATH="build/lua5.4/?.so;;" \
--     lua5.4 bench/instances_rss.lua
--
-- Environment: RSS_FLEET (instances, default 100000), RSS_PAGE_SIZE (1..200,
-- default 100), RSS_LIMIT_MB (default 64). The emulator is another process
-- (nginx), so the figure is the client's alone. Prints the peak (VmHWM from
-- /proc/self/status) and exits 1 when it is over the limit or an instance is
-- missing.
package.path = "lua/?.lua;lua/?/init.lua;./?.lua;" .. package.path
package.cpath = (os.getenv("LUA_CPATH") and "" or "build/lua5.4/?.so;") .. package.cpath
local emulator = require "spec.support.emulator"
local koophone = require "koophone"

local FLEET = tonumber(os.getenv("RSS_FLEET") or "100000")
local PAGE = tonumber(os.getenv("RSS_PAGE_SIZE") or "100")
local LIMIT_MB = tonumber(os.getenv("RSS_LIMIT_MB") or "64")

-- kB of a /proc/self/status line ("VmHWM", "VmRSS")
local function status_kb(key)
  local f = assert(io.open("/proc/self/status"))
  local text = f:read("*a")
  f:close()
  return tonumber(text:match(key .. ":%s*(%d+)")) or 0
end

local emu = emulator.start { fleet = FLEET, scenario = { request_log_max = 10000 } }
local ok, err = pcall(function()
  local client = assert(koophone.new { token = emu.token, endpoint = emu.url })
  local before = status_kb("VmRSS")
  local t0 = koophone.now()
  local n, running, last = 0, 0, nil
  for inst, msg in assert(client:each_instance { page_size = PAGE }) do
    if not inst then error(msg) end
    n = n + 1
    if inst.state == "running" then running = running + 1 end
    last = inst.instance_id
  end
  local elapsed = koophone.now() - t0
  local peak = status_kb("VmHWM")
  client:close()
  print(("each_instance: %d instances (%d running, last %s), %d pages of %d, in %.1fs"):format(
    n, running, tostring(last), math.ceil(n / PAGE), PAGE, elapsed))
  print(("RSS before %.1f MB, peak (VmHWM) %.1f MB, limit %d MB (%s)"):format(
    before / 1024, peak / 1024, LIMIT_MB, rawget(_G, "jit") and _G.jit.version or _VERSION))
  -- the fleet plus the pages' example ids
  if n < FLEET then error(("only %d of %d instances listed"):format(n, FLEET)) end
  if peak / 1024 >= LIMIT_MB then error(("peak RSS %.1f MB is over %d MB"):format(peak / 1024, LIMIT_MB)) end
end)
emu:stop()
if not ok then
  io.stderr:write("instances_rss: ", tostring(err), "\n")
  os.exit(1)
end
