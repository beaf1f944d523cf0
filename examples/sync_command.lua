-- Run a quick command on a few instances and print each one's output.
--   eval "$(bin/koophone-emulator start --env)"; lua5.4 examples/sync_command.lua
local koophone = require "koophone"

local client = assert(koophone.new()) -- KOOPHONE_TOKEN, KOOPHONE_ENDPOINT, ...
local rows, err = client:sync_command("getprop ro.build.version.release", { "kp000001", "kp000002", "a44uhlf7" })
if not rows then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end
for _, row in ipairs(rows) do
  print(("%-10s %-7s %s"):format(row.id, row.status, row.output or row.message or ""))
end
