-- bench/ngx_ping.lua: how much a koophone batch inside an nginx worker slows
-- that worker's other requests. `runs` times: /ping latencies (sequential,
-- one keep-alive connection) while the worker runs a 1,000-instance
-- batch.run, and the same number of pings with the worker idle just
-- before; p99 during / p99 idle per run.
--
--   lua5.4 bench/ngx_ping.lua [runs=5] [n=1000] [pin=1]   (from the repo
--   root; needs build/luajit/koophone/core.so: make luajit-core)
--
-- The emulator answers in 20 ms, jobs take 0.5 s (the OpenResty spec's
-- set-up). The idle reference has as many samples as the batch's window, so
-- that both p99 are read at the same depth. Prints one RESULT line.
--
-- Where the processes run (pin=1, the default, with taskset and 2+ CPUs):
-- the emulator stands in for the vendor's servers, which are not on the
-- host's machine. Left free on a 2-core machine, its work during the batch
-- lands on the worker's core and the pinging process's, and that alone
-- moved the p99 by 1.0-3.1x (the control below, unpinned). So the emulator
-- gets CPU 0; the worker and this process (the pinger) share CPU 1.
--
-- The control: each run also pings the same worker while the same batch
-- runs in a *second* nginx (on CPU 0, beside the emulator). Nothing of
-- koophone runs in the pinged worker then, so `control` is what the
-- machine alone does to the p99 while a batch runs somewhere.
package.path = "lua/?.lua;lua/?/init.lua;./?.lua;" .. package.path
local emulator = require "spec.support.emulator"
local ngx_host = require "spec.support.ngx_host"
local core = require "koophone.core"
local cjson = require "cjson"

local opt = {}
for i = 1, #arg do
  local k, v = arg[i]:match("^(%w+)=(.*)$")
  if k then opt[k] = tonumber(v) end
end
local runs, n = opt.runs or 5, opt.n or 1000

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
local ok2, other = pcall(ngx_host.start, { emu = emu, workers = 1, cpus = far })
if not ok2 then host:stop() emu:stop() error(other) end
local pct = ngx_host.percentile

-- pings to `host` while `other` runs a batch of n
local function control()
  local engine = core.engine()
  local req = engine:submit { url = other.url .. "/batch?n=" .. n, method = "GET", timeout = 120000 }
  local samples = {}
  repeat
    engine:perform()
    for _, v in ipairs(host:probe(50)) do samples[#samples + 1] = v end
    engine:perform()
  until req:done()
  local res = req:response()
  engine:close()
  assert(res and res.status == 200, "the control batch failed")
  return samples
end

local out = { runs = {}, instances = n, pinned = pin or false }
local ok_run, err = pcall(function()
  -- modules loaded, JIT traces, connections to the emulator
  host:probe(0, "/batch?n=100")
  other:probe(0, "/batch?n=100")
  local depth = 8000
  for i = 1, runs do
    local idle = host:probe(depth)
    local during, res = host:probe(nil, "/batch?n=" .. n)
    assert(res and res.status == 200 and res.body.ok == n, "the batch failed")
    depth = #during
    local ctl = control()
    local r = { idle_p99 = pct(idle, 0.99), during_p99 = pct(during, 0.99), idle_n = #idle, during_n = #during,
                idle_p50 = pct(idle, 0.5), during_p50 = pct(during, 0.5), during_max = pct(during, 1),
                control_p99 = pct(ctl, 0.99), control_n = #ctl, batch_s = res.body.elapsed }
    r.ratio = r.during_p99 / r.idle_p99
    r.control_ratio = r.control_p99 / r.idle_p99
    out.runs[i] = r
    io.stderr:write(("run %d: /ping p99 idle %.3f ms (n=%d), during the batch %.3f ms (n=%d): %.2fx;" ..
      " control (the batch in another nginx) %.2fx\n"):format(
      i, r.idle_p99 * 1000, r.idle_n, r.during_p99 * 1000, r.during_n, r.ratio, r.control_ratio))
  end
end)
host:stop()
other:stop()
emu:stop()
if not ok_run then error(err, 0) end
io.write("RESULT ", cjson.encode(out), "\n")
