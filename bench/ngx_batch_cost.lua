-- bench/ngx_batch_cost.lua: what one 1,000-instance batch.run costs the
-- nginx worker that runs it: how often the worker's thread and the waker
-- thread are woken, and their CPU. On the worker's CPU each wake-up delays
-- the worker's next request a little (bench/ngx_ping.lua measures that
-- delay; this counts its causes, without pings, so the counts are exact).
--
--   lua5.4 bench/ngx_batch_cost.lua [batches=20] [n=1000]
--   (from the repo root; needs build/luajit/koophone/core.so: make luajit-core)
--
-- The batch is ngx_ping's (20 ms replies, 0.5 s jobs, concurrency 16).
-- "after" is the driver as it is; "before" is waker=0 slack=0 (the
-- stepping driver, no sleep grid), in the same worker, batches taken in
-- turn. Wake-ups are voluntary context switches (/proc/PID/task/*/status),
-- CPU is schedstat's run time; the few of the /batch request itself
-- (accept, read, reply) are in both. Prints one RESULT line.
package.path = "lua/?.lua;lua/?/init.lua;./?.lua;" .. package.path
local emulator = require "spec.support.emulator"
local ngx_host = require "spec.support.ngx_host"
local cjson = require "cjson"

local opt = require("bench.args")(arg)
local batches, n = opt.batches or 20, opt.n or 1000

local function has_taskset()
  local p = io.popen("nproc 2>/dev/null; command -v taskset")
  local s = p:read("a")
  p:close()
  return (tonumber(s:match("^(%d+)")) or 1) >= 2 and s:find("taskset", 1, true) ~= nil
end
local pin = has_taskset()
local emu = emulator.start { cpus = pin and "0" or nil,
                             scenario = { latency = { default = 0.02 }, durations = { default = 0.5 } } }
local ok, host = pcall(ngx_host.start, { emu = emu, workers = 1, cpus = pin and "1" or nil })
if not ok then emu:stop() error(host) end

local function get(path)
  local p = io.popen((pin and "taskset -c 0 " or "") .. "curl -s " .. emulator.shell_quote(host.url .. path))
  local body = p:read("a")
  p:close()
  local r = cjson.decode(body)
  assert(r.ok == n, "the batch failed: " .. body)
end

-- the worker's own thread and its other threads (the waker): wake-ups, CPU ms
local function sample(worker)
  local main, others, cpu = 0, 0, 0
  local ls = io.popen("ls /proc/" .. worker .. "/task")
  for tid in ls:lines() do
    local f = io.open("/proc/" .. worker .. "/task/" .. tid .. "/status")
    if f then
      local v = tonumber(f:read("a"):match("\nvoluntary_ctxt_switches:%s*(%d+)")) or 0
      f:close()
      if tid == worker then main = main + v else others = others + v end
    end
    f = io.open("/proc/" .. worker .. "/task/" .. tid .. "/schedstat")
    if f then
      cpu = cpu + (tonumber(f:read("a"):match("^(%d+)")) or 0) / 1e6
      f:close()
    end
  end
  ls:close()
  return main, others, cpu
end

local variants = {
  { name = "after", path = ("/batch?n=%d"):format(n) },
  { name = "before", path = ("/batch?n=%d&waker=0&slack=0"):format(n) },
}
local out = { batches = batches, instances = n, pinned = pin }
local ok_run, err = pcall(function()
  local worker = assert(host:worker(), "no worker")
  for _, v in ipairs(variants) do
    get(v.path) -- modules, traces, connections
    v.main, v.thread, v.cpu = 0, 0, 0
  end
  for _ = 1, batches do
    for _, v in ipairs(variants) do
      local m0, t0, c0 = sample(worker)
      get(v.path)
      local m1, t1, c1 = sample(worker)
      v.main, v.thread, v.cpu = v.main + m1 - m0, v.thread + t1 - t0, v.cpu + c1 - c0
    end
  end
  for _, v in ipairs(variants) do
    out[v.name] = { worker_wakeups = v.main / batches, thread_wakeups = v.thread / batches, cpu_ms = v.cpu / batches }
    io.stderr:write(("%s: per batch, worker woken %.1f times, its other threads %.1f, CPU %.1f ms\n"):format(
      v.name, v.main / batches, v.thread / batches, v.cpu / batches))
  end
end)
host:stop()
emu:stop()
if not ok_run then error(err, 0) end
io.write("RESULT ", cjson.encode(out), "\n")
