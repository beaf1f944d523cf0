-- bench/ngx_ping.lua: how much a koophone batch inside an nginx worker slows
-- that worker's other requests. `runs` times: /ping latencies (sequential,
-- one keep-alive connection) while the worker runs a 1,000-instance
-- batch.run, and the same number of pings with the worker idle just
-- before; p99 during / p99 idle per run.
--
--   lua5.4 bench/ngx_ping.lua [runs=5] [n=1000]   (from the repo root;
--   needs build/luajit/koophone/core.so: make luajit-core)
--
-- The emulator answers in 20 ms, jobs take 0.5 s (the OpenResty spec's
-- set-up). The idle reference has as many samples as the batch's window, so
-- that both p99 are read at the same depth. Prints one RESULT line.
package.path = "lua/?.lua;lua/?/init.lua;./?.lua;" .. package.path
local emulator = require "spec.support.emulator"
local ngx_host = require "spec.support.ngx_host"
local cjson = require "cjson"

local opt = {}
for i = 1, #arg do
  local k, v = arg[i]:match("^(%w+)=(.*)$")
  if k then opt[k] = tonumber(v) end
end
local runs, n = opt.runs or 5, opt.n or 1000

local emu = emulator.start { scenario = { latency = { default = 0.02 }, durations = { default = 0.5 } } }
local ok, host = pcall(ngx_host.start, { emu = emu, workers = 1 })
if not ok then emu:stop() error(host) end
local pct = ngx_host.percentile
local out = { runs = {}, instances = n }
local ok_run, err = pcall(function()
  host:probe(0, "/batch?n=100") -- modules loaded, JIT traces, connections to the emulator
  local depth = 8000
  for i = 1, runs do
    local idle = host:probe(depth)
    local during, res = host:probe(nil, "/batch?n=" .. n)
    assert(res and res.status == 200 and res.body.ok == n, "the batch failed")
    depth = #during
    local r = { idle_p99 = pct(idle, 0.99), during_p99 = pct(during, 0.99), idle_n = #idle, during_n = #during,
                idle_p50 = pct(idle, 0.5), during_p50 = pct(during, 0.5), during_max = pct(during, 1),
                batch_s = res.body.elapsed }
    r.ratio = r.during_p99 / r.idle_p99
    out.runs[i] = r
    io.stderr:write(("run %d: /ping p99 idle %.3f ms (n=%d), during the batch %.3f ms (n=%d): %.2fx\n"):format(
      i, r.idle_p99 * 1000, r.idle_n, r.during_p99 * 1000, r.during_n, r.ratio))
  end
end)
host:stop()
emu:stop()
if not ok_run then error(err, 0) end
io.write("RESULT ", cjson.encode(out), "\n")
