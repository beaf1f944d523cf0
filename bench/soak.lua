--- bench/soak.lua: a bounded soak of repeated batches against one emulator
-- with ~1% injected faults.
--
--   SOAK_SECONDS=120 LUA_PATH="lua/?.lua;lua/?/init.lua;./?.lua;;" \
--     LUA_CPATH="build/lua5.4/?.so;;" lua5.4 bench/soak.lua
--
-- Default 600 s. Batches alternate: sync-command (32 ids per request),
-- async-command (100 ids per request + polling), install, restart; every
-- batch uses a fresh command so the emulator's execution counts prove that
-- nothing ran twice. Every SOAK_INTERVAL (20 s) it prints RSS, open fds
-- (/proc/self/fd), the emulator's connections and request count, checks
-- `executions().max <= 1`, then resets the emulator's counters. At the end
-- it asserts: every id of every batch has exactly one row; RSS, fds and
-- connections flat after warm-up (RSS peak of the second half of the samples
-- within 5% of the first half's; connections per 1000 requests within 15%,
-- a noisier figure; fds other than sockets equal, sockets within the
-- pool); and prints the totals. Exit 1 on failure.
package.path = "lua/?.lua;lua/?/init.lua;./?.lua;" .. package.path
package.cpath = "build/lua5.4/?.so;" .. package.cpath
local emulator = require "spec.support.emulator"
local koophone = require "koophone"
local batch = require "koophone.batch"

local SECONDS = tonumber(os.getenv("SOAK_SECONDS") or "600")
local INTERVAL = tonumber(os.getenv("SOAK_INTERVAL") or "20")
local WARMUP = tonumber(os.getenv("SOAK_WARMUP") or tostring(math.min(60, SECONDS * 0.25)))
local FLEET = 3200

local FAULTS = {
  { endpoint = "sync-command", kind = "500", probability = 0.004 },
  { endpoint = "sync-command", kind = "reset", probability = 0.003 },
  { endpoint = "sync-command", kind = "malformed", probability = 0.003 },
  { endpoint = "async-command", kind = "503", probability = 0.01, retry_after = 0 },
  { endpoint = "task", kind = "500", probability = 0.005 },
  { endpoint = "task", kind = "truncate", probability = 0.005 },
  { endpoint = "install", kind = "reset", probability = 0.01 },
  { endpoint = "restart", kind = "429", probability = 0.01, retry_after = 0 },
  { endpoint = "jobs", kind = "503", probability = 0.01, retry_after = 0 },
}

local function rss_kb()
  local f = io.open("/proc/self/status")
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

local function fds()
  local p = io.popen("ls /proc/" .. (io.open("/proc/self/stat"):read("n")) .. "/fd 2>/dev/null | wc -l")
  -- /proc/self inside popen would be the shell; read our own pid instead
  local n = tonumber(p:read("a"))
  p:close()
  return n
end

-- this process's open fds: total and sockets (pooled connections come
-- and go with the batches; the rest must stay flat)
local function my_fds()
  local f = io.open("/proc/self/stat")
  local pid = f:read("n")
  f:close()
  local p = io.popen("ls -l /proc/" .. pid .. "/fd")
  local total, sockets = 0, 0
  for line in p:lines() do
    if line:match("%->") then
      total = total + 1
      if line:match("socket:") then sockets = sockets + 1 end
    end
  end
  p:close()
  return total - 1, sockets -- minus the pipe of this popen
end
local _ = fds

local emu = emulator.start { fleet = FLEET, scenario = { seed = 11, faults = FAULTS,
  durations = { default = 0.05, install = 0.1, restart = 0.1 }, fail_ratio = 0.01 } }
local client = assert(koophone.new { token = emu.token, endpoint = emu.url, cph_endpoint = emu.url,
  project_id = emu.project_id, poll_interval = 0.05, poll_max_interval = 0.5, retry_base = 0.01,
  retry_cap = 0.1 })

local ids, phones = {}, {}
for i = 1, FLEET do ids[i] = ("kp%06d"):format(i - 1); phones[i] = ("ph%06d"):format(i - 1) end
local APP = { object_name = "com.example.soak", file_name = "soak.apk", object_version = "1",
              object_size = 1, install_package_url = "https://obs.example.com/soak.apk?Signature=S" }

local t0 = koophone.now()
local failures = {}
local function fail(msg) failures[#failures + 1] = msg; io.stderr:write("FAIL: ", msg, "\n") end

local totals = { batches = 0, rows = 0, requests = 0, ok = 0, not_ok = 0 }
local samples = {}
local next_sample = t0 + INTERVAL

-- counters of the emulator since its last reset, folded into the interval's;
-- called after each restart batch (restart counts one execution per phone
-- whatever the batch, so its counts must not span two batches) and at
-- each sample
local interval = { requests = 0, connections = 0, max = 0 }
local function account()
  local st = emu:stats()
  local ex = emu:executions()
  interval.requests = interval.requests + (st.requests or 0)
  interval.connections = interval.connections + (st.connections or 0)
  if (ex.max or 0) > interval.max then interval.max = ex.max end
  if (ex.max or 0) > 1 then fail(("executions().max = %d at %.0fs"):format(ex.max, koophone.now() - t0)) end
  emu:reset()
end

local function sample(final)
  account()
  totals.requests = totals.requests + interval.requests
  collectgarbage()
  local nfd, nsock = my_fds()
  local s = { t = koophone.now() - t0, rss = rss_kb(), fds = nfd - nsock, sockets = nsock, connections = interval.connections,
              requests = interval.requests, max = interval.max }
  samples[#samples + 1] = s
  print(("%6.0fs  rss %6d kB  fds %3d (+%2d sockets)  emulator connections %4d  requests %7d (total %8d)  executions.max %d  batches %d%s")
    :format(s.t, s.rss, s.fds, s.sockets, s.connections, s.requests, totals.requests, s.max,
            totals.batches, final and "  (final)" or ""))
  io.stdout:flush()
  interval = { requests = 0, connections = 0, max = 0 }
end

local kinds = { "sync", "async", "sync", "install", "sync", "restart" }
local n = 0
while koophone.now() - t0 < SECONDS do
  n = n + 1
  local kind = kinds[(n - 1) % #kinds + 1]
  local report, err
  local list = ids
  if kind == "sync" then
    report, err = batch.run(client, "echo soak-" .. n, ids, { mode = "sync", concurrency = 32 })
  elseif kind == "async" then
    report, err = batch.run(client, "echo soak-" .. n, ids, { concurrency = 32 })
  elseif kind == "install" then
    local app = setmetatable({ object_name = "com.example.soak" .. n }, { __index = APP })
    local a = {}
    for k, v in pairs(APP) do a[k] = v end
    a.object_name = app.object_name
    report, err = batch.install(client, a, ids, { concurrency = 32 })
  else
    list = phones
    report, err = batch.restart(client, phones, { concurrency = 16, rate = 1000, burst = 100 })
  end
  if not report then
    fail("batch " .. n .. " (" .. kind .. "): " .. tostring(err))
  else
    totals.batches = totals.batches + 1
    local seen, count = {}, 0
    for _, row in ipairs(report.rows) do
      if seen[row.id] then fail(("batch %d: id %s twice"):format(n, row.id)) end
      seen[row.id] = true
      count = count + 1
      if row.status == "ok" then totals.ok = totals.ok + 1 else totals.not_ok = totals.not_ok + 1 end
      if row.status == "running" then fail(("batch %d: id %s still running"):format(n, row.id)) end
    end
    for _, id in ipairs(list) do
      if not seen[id] then fail(("batch %d: id %s has no row"):format(n, id)) end
    end
    if count ~= #list then fail(("batch %d: %d rows for %d ids"):format(n, count, #list)) end
    totals.rows = totals.rows + count
  end
  if kind == "restart" then account() end
  if koophone.now() >= next_sample then
    next_sample = next_sample + INTERVAL
    sample(false)
  end
  if #failures > 20 then break end
end
if koophone.now() - t0 - samples[#samples].t > 1 then sample(true) end
client:close()
emu:stop()

-- flat after warm-up: the samples after warm-up, split in halves; the
-- second half's peak must stay within 5% of the first half's peak (single
-- samples swing with the batch in progress and the GC)
local post = {}
for _, s in ipairs(samples) do if s.t >= WARMUP then post[#post + 1] = s end end
local base, last = post[1], samples[#samples]
if #post >= 2 then
  local h = math.floor(#post / 2)
  local function peak(from, to, f)
    local m = 0
    for i = from, to do m = math.max(m, f(post[i])) end
    return m
  end
  local rss1, rss2 = peak(1, h, function(s) return s.rss end), peak(h + 1, #post, function(s) return s.rss end)
  if rss2 > rss1 * 1.05 then
    fail(("RSS peak grew %d kB -> %d kB (%.1f%%) after warm-up"):format(rss1, rss2, 100 * (rss2 / rss1 - 1)))
  end
  -- fds other than sockets must not grow; sockets stay within the pool
  if last.fds > base.fds then fail(("open fds (not sockets) grew %d -> %d"):format(base.fds, last.fds)) end
  for _, s in ipairs(samples) do
    if s.sockets > 32 + 8 then fail(("%d sockets open at %.0fs (concurrency 32)"):format(s.sockets, s.t)) end
  end
  -- connections used per 1,000 requests: the pool is reused, not reopened
  local function cpk(s) return s.requests > 0 and 1000 * s.connections / s.requests or 0 end
  local c1, c2 = peak(1, h, cpk), peak(h + 1, #post, cpk)
  if c2 > c1 * 1.15 + 1 then fail(("connections per 1000 requests grew %.1f -> %.1f"):format(c1, c2)) end
  print(("after warm-up: RSS peak %d -> %d kB; connections per 1000 requests %.1f -> %.1f"):format(rss1, rss2, c1, c2))
else
  print("(run too short for the flatness check: need a sample after warm-up and a later one)")
end
local el = koophone.now() - t0
print(("soak: %.0f s, %d batches, %d rows (%d ok, %d not ok: injected faults), %d requests (%.0f/s), RSS %d -> %d kB, fds (not sockets) %d -> %d, %d failures")
  :format(el, totals.batches, totals.rows, totals.ok, totals.not_ok, totals.requests, totals.requests / el,
          base and base.rss or samples[1].rss, last.rss, base and base.fds or samples[1].fds, last.fds, #failures))
os.exit(#failures == 0 and 0 or 1)
