-- bench/ngx_ping.lua: how much a koophone batch inside an nginx worker slows
-- that worker's other requests. /ping latencies (sequential, one keep-alive
-- connection, kept for the whole run) while the worker runs a 1,000-instance
-- batch.run, against /ping latencies with the worker idle.
--
--   lua5.4 bench/ngx_ping.lua [runs=5] [rounds=4] [n=1000] [pin=1] [waker=1] [slack=0.01]
--   (from the repo root; needs build/luajit/koophone/core.so: make luajit-core)
--
-- The emulator answers in 20 ms, jobs take 0.5 s (the OpenResty spec's
-- set-up). waker=0 and slack=0 run the batch with the stepping driver and
-- without the sleep grid (the code before them), for comparison.
--
-- A run is `rounds` rounds, and a round is three windows, one after the
-- other: idle (as many pings as the last batch window had), the batch, and
-- the null control (/sleep for as long as the batch took: a request in the
-- same worker that does nothing). Each run pools its rounds' samples:
-- ratio = p99(batch windows) / p99(idle windows), null = p99(null windows)
-- / p99(idle windows). Why pooled and interleaved: on this shared 2-core VM
-- one 0.6 s window against the next moved the p99 by 0.7-1.6x with
-- nothing running at all (the null control, one round per run); windows
-- taken in turn put the VM's slow and fast stretches into both sides.
--
-- Where the processes run (pin=1, the default, with taskset and 2+ CPUs):
-- the emulator stands in for the vendor's servers, which are not on the
-- host's machine. So it gets CPU 0; the worker and this process (the
-- pinger) share CPU 1. Prints one RESULT line.
package.path = "lua/?.lua;lua/?/init.lua;./?.lua;" .. package.path
local emulator = require "spec.support.emulator"
local ngx_host = require "spec.support.ngx_host"
local cjson = require "cjson"

local opt = require("bench.args")(arg)
local runs, rounds, n = opt.runs or 5, opt.rounds or 4, opt.n or 1000
local batch_path = ("/batch?n=%d&waker=%d&slack=%s"):format(n, opt.waker or 1, opt.slack or 0.01)

local function cpus()
  local p = io.popen("nproc 2>/dev/null; command -v taskset")
  local s = p:read("a")
  p:close()
  return tonumber(s:match("^(%d+)")) or 1, s:find("taskset", 1, true) ~= nil
end
local ncpu, has_taskset = cpus()
local pin = opt.pin ~= 0 and has_taskset and ncpu >= 2
local far, near -- the emulator's CPU, the worker's and the pinger's
if pin then
  far, near = "0", "1"
  -- this process: $PPID of os.execute's shell
  os.execute("taskset -cp " .. near .. " $PPID >/dev/null")
end

local emu = emulator.start { cpus = far, scenario = { latency = { default = 0.02 }, durations = { default = 0.5 } } }
local ok, host = pcall(ngx_host.start, { emu = emu, workers = 1, cpus = near })
if not ok then emu:stop() error(host) end
local pct = ngx_host.percentile

local function add(to, from) for _, v in ipairs(from) do to[#to + 1] = v end end

local out = { runs = {}, instances = n, rounds = rounds, pinned = pin or false, batch = batch_path }
local ok_run, err = pcall(function()
  local pinger = host:pinger()
  -- modules loaded, JIT traces, connections to the emulator
  pinger:probe(0, "/batch?n=100")
  local depth, batch_s = 8000, 0.6
  for i = 1, runs do
    local idle, during, null, per_round = {}, {}, {}, {}
    local elapsed = {}
    for r = 1, rounds do
      local w_idle = pinger:probe(depth)
      local w_batch, res = pinger:probe(nil, batch_path)
      assert(res and res.status == 200 and res.body.ok == n, "the batch failed")
      batch_s = res.body.elapsed
      local w_null = pinger:probe(nil, ("/sleep?s=%.3f"):format(batch_s))
      depth = #w_batch
      add(idle, w_idle); add(during, w_batch); add(null, w_null)
      per_round[r] = pct(w_batch, 0.99) / pct(w_idle, 0.99)
      elapsed[r] = batch_s
    end
    local x = { idle_p99 = pct(idle, 0.99), during_p99 = pct(during, 0.99), null_p99 = pct(null, 0.99),
                idle_n = #idle, during_n = #during, null_n = #null,
                idle_p50 = pct(idle, 0.5), during_p50 = pct(during, 0.5), during_max = pct(during, 1),
                per_round = per_round, batch_s = elapsed }
    x.ratio = x.during_p99 / x.idle_p99
    x.null_ratio = x.null_p99 / x.idle_p99
    out.runs[i] = x
    local rs = {}
    for r = 1, #per_round do rs[r] = ("%.2f"):format(per_round[r]) end
    io.stderr:write(("run %d: /ping p99 idle %.3f ms (n=%d), during the batches %.3f ms (n=%d): %.2fx;" ..
      " null control %.2fx; rounds alone %s\n"):format(
      i, x.idle_p99 * 1000, x.idle_n, x.during_p99 * 1000, x.during_n, x.ratio, x.null_ratio,
      table.concat(rs, " ")))
  end
  pinger:close()
end)
host:stop()
emu:stop()
if not ok_run then error(err, 0) end
io.write("RESULT ", cjson.encode(out), "\n")
