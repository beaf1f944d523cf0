--- A rollout in five steps: restart phones, wait until each runs again,
-- install an app on the ones that came back, verify in each instance's app
-- list that it landed (the vendor may report an install as done when it is
-- not), then run `pm list packages` on the survivors.
--
--     eval "$(bin/koophone-emulator start --env)"
--     LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/lua5.4/?.so;;" \
--       lua5.4 examples/rollout.lua 500
--
-- Environment: KOOPHONE_ENDPOINT, KOOPHONE_CPH_ENDPOINT, KOOPHONE_TOKEN,
-- KOOPHONE_PROJECT_ID; KOOPHONE_APP_URL (the package URL), KOOPHONE_EXPECT
-- (what `pm list packages` must show; default "package:"), KOOPHONE_BOOT_DEADLINE
-- (seconds a phone may take to run again, default 120).
-- The emulator's phones ph000000... run instances kp000000...: phone N maps
-- to instance N (`phone_to_instance` below).
local koophone = require "koophone"
local workflow = require "koophone.workflow"

local n = tonumber(arg[1] or "100")
if not n or n < 1 or n > 10000 then
  io.stderr:write("usage: rollout.lua [COUNT (1..10000, default 100)]\n")
  os.exit(2)
end

local client, err = koophone.new { poll_interval = 0.2, allow_insecure = false }
if not client then
  io.stderr:write("rollout: ", tostring(err), "\n")
  os.exit(2)
end

local phones = {}
for i = 0, n - 1 do phones[#phones + 1] = ("ph%06d"):format(i) end

local app = {
  object_name = "com.example.app", file_name = "example.apk", object_version = "1.0.0",
  object_size = 12, fast_install = 0,
  install_package_url = os.getenv("KOOPHONE_APP_URL") or "https://obs.example.com/apps/example.apk",
}

local function progress(p)
  io.stderr:write(("\r%-16s %d/%d ok %d failed %d error %d   "):format(
    p.step or "", p.done, p.total, p.ok, p.failed, p.error))
end

local report, rerr = workflow.new(client, {
  concurrency = 8,
  on_progress = progress,
  phone_to_instance = function(phone) return (phone:gsub("^ph", "kp")) end,
})
  :restart(phones)
  :wait_running { deadline = tonumber(os.getenv("KOOPHONE_BOOT_DEADLINE") or "120"), interval = 0.5 }
  :install(app)
  :verify_installed { package = app.object_name, version = app.object_version }
  :run("pm list packages", { expect = os.getenv("KOOPHONE_EXPECT") or "package:" })
  :execute()
io.stderr:write("\n")
if not report then
  io.stderr:write("rollout: ", tostring(rerr), "\n")
  os.exit(2)
end

print(tostring(report))
for _, s in ipairs(report.summary.steps) do
  print(("  %-16s %d of %d ok"):format(s.name, s.ok, s.total))
end
local caught = 0
for _, row in ipairs(report.rows) do
  if row.dropped_at == "verify_installed" then caught = caught + 1 end
end
print(("verify_installed caught %d install(s) the vendor reported as done that are not in the app list"):format(caught))
local failed = report:failed()
if #failed > 0 then
  print()
  print(report:to_table(failed))
end
os.exit(#failed == 0 and 0 or 1)
