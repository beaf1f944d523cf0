--- What AK/SK signing costs per request, in instructions (callgrind).
--
--     make && LUA_PATH="lua/?.lua;lua/?/init.lua;./?.lua;;" \
--       LUA_CPATH="build/lua5.4/?.so;;" lua5.4 bench/sign_cost.lua [N]
--
-- Starts an emulator, then runs this script as a child under
-- `valgrind --tool=callgrind` four times: N and 4N sequential sync-commands
-- (POST, one instance), with a token and with AK/SK. The difference of
-- 4N and N requests gives the cost of one request in each mode (start-up
-- cancels out); their difference is the signing cost (core.sign, the JSON
-- body encoded in Lua, the header lines). Results: docs/credentials.md.
--
-- It also measures core.sign alone (N and 4N calls, a sync-command's
-- request).
--
-- As a child: `lua5.4 bench/sign_cost.lua --run token|aksk|sign N URL`.
local mode, n, url = arg[1], tonumber(arg[2]), arg[3]

if mode == "--run" and arg[2] == "sign" then
  local core = require "koophone.core"
  local spec = { method = "POST", url = arg[4] .. "/v1/instances/sync-command", ak = "emulator-ak", sk = "emulator-sk",
                 body = '{"command":"echo hi","instance_ids":["kp000001"]}',
                 headers = { ["Content-Type"] = "application/json", ["X-Project-Id"] = "emulator-project" } }
  for _ = 1, tonumber(arg[3]) do
    spec.date = os.time()
    core.sign(spec)
  end
  return
elseif mode == "--run" then
  local koophone = require "koophone"
  mode, n, url = arg[2], tonumber(arg[3]), arg[4]
  local opts = { endpoint = url, cph_endpoint = url, project_id = "emulator-project" }
  if mode == "aksk" then opts.ak, opts.sk = "emulator-ak", "emulator-sk" else opts.token = "emulator-token" end
  local client = assert(koophone.new(opts))
  for i = 1, n do
    local rows = assert(client:sync_command("echo hi", { ("kp%06d"):format(i % 1000) }))
    assert(rows[1].status == "ok")
  end
  client:close()
  return
end

local emulator = require "spec.support.emulator"
n = tonumber(mode) or 100
local emu = emulator.start { fleet = 1000 }
local q = emulator.shell_quote
local script = debug.getinfo(1, "S").source:sub(2)

local function instructions(m, count)
  local out, rc = emulator.run(("valgrind --tool=callgrind --callgrind-out-file=/dev/null lua5.4 %s --run %s %d %s 2>&1")
    :format(q(script), m, count, q(emu.url)))
  local total = out:match("Collected : (%d+)")
  if rc ~= 0 or not total then
    emu:stop()
    error("callgrind run failed (" .. m .. ", " .. count .. "): " .. out:sub(-400))
  end
  return tonumber(total)
end

local per = {}
for _, m in ipairs { "token", "aksk", "sign" } do
  local a, b = instructions(m, n), instructions(m, 4 * n)
  per[m] = (b - a) / (3 * n)
  print(("%-5s  %d calls: %d instructions, %d calls: %d; per call: %.0f")
    :format(m, n, a, 4 * n, b, per[m]))
end
local s = emu:stats().aksk
emu:stop()
print(("signing adds %.0f instructions per request (%.1f%% over the token's %.0f), %.0f of them in core.sign;"
  .. " emulator: %d signatures ok, %d failed")
  :format(per.aksk - per.token, 100 * (per.aksk - per.token) / per.token, per.token, per.sign, s.ok, s.failed))
