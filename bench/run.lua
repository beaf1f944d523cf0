-- bench/run.lua: koophone's benchmarks beside its anchors (see docs/bench.md).
--
--   make bench                 (or: lua5.4 bench/run.lua from the repo root)
--   BENCH_SCALE=small          leaves out the 100,000-instance sizes
--   BENCH_QUICK=1              the idle test waits 10 s instead of 30 s
--   BENCH_REPEAT=3             runs of koophone/curl (zero latency) and koophone/h2load (50 ms)
--                              per W1 cell, as interleaved pairs (median kept)
--   BENCH_WORKERS=1            nginx workers of the emulator
--
-- Starts its own emulator, runs every tool as a child process under
-- /usr/bin/time (wall, CPU, peak RSS), prints a table, writes
-- bench/results.json and bench/chart.png. Nothing printed is hard-coded.
package.path = "lua/?.lua;lua/?/init.lua;./?.lua;" .. package.path
local cjson = require "cjson"

local ROOT = "bench"
local RES = ROOT .. "/results"
os.execute("mkdir -p " .. RES)
local LOG = RES .. "/bench.log"
io.open(LOG, "w"):close()

-- 1,000, 10,000 and 100,000 instances by default; BENCH_SCALE=small skips 100,000
local FULL = os.getenv("BENCH_SCALE") ~= "small"
local QUICK = (os.getenv("BENCH_QUICK") or "") ~= "" and os.getenv("BENCH_QUICK") ~= "0"
local REPEAT = tonumber(os.getenv("BENCH_REPEAT") or "") or 3
local WORKERS = tonumber(os.getenv("BENCH_WORKERS") or "") or 1
local SIZES = FULL and { 1000, 10000, 100000 } or { 1000, 10000 }
local CONC = 64
local KP_ENV = 'env LUA_PATH="lua/?.lua;lua/?/init.lua;./?.lua;;" LUA_CPATH="build/lua5.4/?.so;;" '
local ANCHOR_ENV = "env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_3 -u LUA_CPATH_5_3 "

local function log(s) local f = io.open(LOG, "a") f:write(s, "\n") f:close() end
local function say(s) io.stderr:write(s, "\n") log(s) end

local function sh(cmd)
  local p = io.popen(cmd .. " 2>>" .. LOG)
  local out = p:read("a")
  local ok, _, rc = p:close()
  return out, ok and 0 or rc
end
local function trim(s) return (s or ""):gsub("^%s+", ""):gsub("%s+$", "") end
local function first_line(s) return trim((s or ""):match("[^\n]*")) end
local function have(cmd) return sh("command -v " .. cmd .. " >/dev/null && echo y") == "y\n" end
local function readfile(p) local f = io.open(p) if not f then return nil end local s = f:read("a") f:close() return s end

-- runs `cmd` under /usr/bin/time; returns stdout and {wall_proc, user, sys, cpu, maxrss_kb, rc}
local function timed(cmd)
  local tf = os.tmpname()
  log("$ " .. cmd)
  local out, rc = sh(("/usr/bin/time -f 'TIME %%e %%U %%S %%M' -o %s %s"):format(tf, cmd))
  local t = readfile(tf) or ""
  os.remove(tf)
  local e, u, s, m = t:match("TIME ([%d.]+) ([%d.]+) ([%d.]+) (%d+)")
  return out, { wall_proc = tonumber(e), user = tonumber(u), sys = tonumber(s),
                cpu = (tonumber(u) or 0) + (tonumber(s) or 0), maxrss_kb = tonumber(m), rc = rc }
end

local function result_of(out)
  local j = out:match("RESULT (%b{})")
  if not j then return nil end
  local ok, t = pcall(cjson.decode, j)
  return ok and t or nil
end

-- ---------------------------------------------------------------- deps
if sh("id -u") == "0\n" then
  local _, rc = sh("bash " .. ROOT .. "/deps.sh")
  if rc ~= 0 then say("bench/deps.sh failed (see " .. LOG .. "); missing anchors are skipped") end
else
  local out = sh("bash " .. ROOT .. "/deps.sh 2>&1")
  if out ~= "" then io.stderr:write(out) end
end
local HAS = {
  h2load = have("h2load"), curl = have("curl"),
  lua_curl = have("lua5.1") and sh(ANCHOR_ENV .. "lua5.1 -e 'require\"curl\" require\"socket\" require\"cjson\" print(1)'") == "1\n",
  lua_http = have("lua5.3") and sh(ANCHOR_ENV .. "lua5.3 -e 'package.path=package.path..\";/usr/share/lua/5.1/?.lua\" require\"http.client\" require\"cjson\" print(1)'") == "1\n",
  luasocket = sh(ANCHOR_ENV .. "lua5.4 -e 'require\"socket.http\" require\"cjson\" print(1)'") == "1\n",
  python = have("python3") and sh("python3 -c 'import requests; print(1)'") == "1\n",
  gnuplot = have("gnuplot"), valgrind = have("valgrind"),
  openresty = have("nginx") and sh("test -f /usr/lib/nginx/modules/ngx_http_lua_module.so && " ..
    "test -f build/luajit/koophone/core.so && echo y") == "y\n",
}

-- ---------------------------------------------------------------- versions
local V = {}
V.koophone = first_line(sh(KP_ENV .. "lua5.4 -e 'local k=require\"koophone\" local c=require\"koophone.core\" " ..
  "local v,h2,tls=c.curl_version() print(\"koophone \"..k.VERSION..\" (\".._VERSION..\", libcurl \"..v..\" \"..tls..\")\")'"))
V.curl = HAS.curl and first_line(sh("curl --version")) or nil
V.h2load = HAS.h2load and first_line(sh("h2load --version")) or nil
V.lua_curl = HAS.lua_curl and ("lua-curl " .. trim(sh("dpkg-query -W -f='${Version}' lua-curl")) .. " on " ..
  first_line(sh(ANCHOR_ENV .. "lua5.1 -e 'print(_VERSION..\", \"..require\"curl\".version())'"))) or nil
V.lua_http = HAS.lua_http and ("lua-http " .. trim(sh("dpkg-query -W -f='${Version}' lua-http")) .. ", lua-cqueues " ..
  trim(sh("dpkg-query -W -f='${Version}' lua-cqueues")) .. " on " .. first_line(sh("lua5.3 -v 2>&1"))) or nil
V.luasocket = HAS.luasocket and ("lua-socket " .. trim(sh("dpkg-query -W -f='${Version}' lua-socket")) ..
  " + lua-cjson " .. trim(sh("dpkg-query -W -f='${Version}' lua-cjson")) .. " on " .. first_line(sh("lua5.4 -v 2>&1"))) or nil
V.python = HAS.python and (first_line(sh("python3 --version 2>&1")) .. ", requests " ..
  first_line(sh("python3 -c 'import requests; print(requests.__version__)'"))) or nil
V.emulator = "nginx " .. trim(sh("/usr/sbin/nginx -v 2>&1 | sed 's/.*nginx\\///'")) .. " + libnginx-mod-http-lua " ..
  trim(sh("dpkg-query -W -f='${Version}' libnginx-mod-http-lua")) .. ", " .. WORKERS .. " worker(s)"
V.valgrind = HAS.valgrind and first_line(sh("valgrind --version")) or nil
V.gnuplot = HAS.gnuplot and first_line(sh("gnuplot --version")) or nil
V.machine = trim(sh("nproc")) .. " CPUs, " .. trim(sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"))

print("== versions")
for _, k in ipairs { "koophone", "curl", "h2load", "lua_curl", "lua_http", "luasocket", "python", "emulator", "valgrind", "gnuplot", "machine" } do
  print(("  %-10s %s"):format(k, V[k] or "(missing: skipped)"))
end
io.stdout:flush()

-- ---------------------------------------------------------------- emulator
local TMP = trim(sh("mktemp -d /tmp/koophone-bench.XXXXXX"))
local scenario = TMP .. "/scenario.json"
local maxn = SIZES[#SIZES]
do
  local f = io.open(scenario, "w")
  f:write(cjson.encode { fleet = { instances = math.max(maxn, 100000), phones = math.max(maxn, 100000) },
                         latency = { default = 0 }, durations = { default = 2 } })
  f:close()
end
-- a private TMPDIR, so that `koophone-emulator stop --all` elsewhere leaves it alone
local URL = first_line(sh(("TMPDIR=%s bin/koophone-emulator start --workers %d --scenario %s"):format(TMP, WORKERS, scenario)))
if not URL:match("^http://") then error("the emulator did not start: " .. URL .. " (see " .. LOG .. ")") end
local function stop_emulator() sh(("TMPDIR=%s bin/koophone-emulator stop %s"):format(TMP, URL)) end

local function control(path, body)
  return sh(("curl -s -m 10 -X POST -H 'Content-Type: application/json' %s %s/_emulator/%s"):format(
    body and ("-d '" .. body .. "'") or "", URL, path))
end
local function regime(lat)
  control("reset")
  control("config", cjson.encode { latency = { default = lat }, durations = { default = 2 } })
end

-- ---------------------------------------------------------------- tools
local function sweep_reqs(n) return math.ceil(n / 32) end

-- the same curl requests in every W1 figure (bench/curl_w1.lua)
local function curl_config(n, rounds) return require("bench.curl_w1").config(TMP, URL, n, rounds) end

local function h2load_body()
  local path = TMP .. "/body.json"
  local ids = {}
  for i = 0, 31 do ids[#ids + 1] = ('"kp%06d"'):format(i) end
  local f = io.open(path, "w")
  f:write('{"command":"getprop ro.build.version.release","instance_ids":[', table.concat(ids, ","), ']}')
  f:close()
  return path
end

-- each: run(n, rounds) -> record (requests, ok, wall, ...) ; seq = one request at a time
local TOOLS = {
  { name = "koophone", ok = true, run = function(n, rounds)
      local out, m = timed(("%slua5.4 %s/kp.lua w1 %s n=%d rounds=%d conc=%d"):format(KP_ENV, ROOT, URL, n, rounds, CONC))
      local r = result_of(out) or {}
      r.m = m
      return r
    end },
  { name = "curl", ok = HAS.curl, run = function(n, rounds)
      local cfg = curl_config(n, rounds)
      local out, m = timed(("curl -s --no-progress-meter --parallel --parallel-max %d -K %s"):format(CONC, cfg))
      local ok = 0
      for code in out:gmatch("(%d+)\n") do if code == "200" then ok = ok + 1 end end
      return { requests = sweep_reqs(n) * rounds, ok = ok, wall = m.wall_proc, m = m }
    end },
  { name = "h2load", ok = HAS.h2load, run = function(n, rounds)
      local reqs = sweep_reqs(n) * rounds
      local out, m = timed(("h2load --h1 -n %d -c %d -t 1 -d %s -H 'X-Auth-Token: emulator-token' " ..
        "-H 'Content-Type: application/json' -H 'x-request-id: h2load-bench' %s/v1/instances/sync-command")
        :format(reqs, math.min(CONC, reqs), h2load_body(), URL))
      local val, unit = out:match("finished in ([%d.]+)(m?s)")
      local wall = tonumber(val)
      if wall and unit == "ms" then wall = wall / 1000 end
      return { requests = reqs, ok = tonumber(out:match("status codes: (%d+) 2xx")) or 0, wall = wall, m = m }
    end },
  { name = "lua-curl", ok = HAS.lua_curl, seq = true, run = function(n, rounds)
      local out, m = timed(("%slua5.1 %s/anchors/lua_curl.lua %s %d %d"):format(ANCHOR_ENV, ROOT, URL, n, rounds))
      local r = result_of(out) or {}
      r.m = m
      return r
    end },
  { name = "lua-http", ok = HAS.lua_http, run = function(n, rounds)
      local out, m = timed(("%slua5.3 %s/anchors/lua_http.lua %s %d %d %d"):format(ANCHOR_ENV, ROOT, URL, n, rounds, CONC))
      local r = result_of(out) or {}
      r.m = m
      return r
    end },
  { name = "luasocket", ok = HAS.luasocket, seq = true, run = function(n, rounds)
      local out, m = timed(("%slua5.4 %s/anchors/luasocket.lua %s %d %d"):format(ANCHOR_ENV, ROOT, URL, n, rounds))
      local r = result_of(out) or {}
      r.m = m
      return r
    end },
  { name = "python", ok = HAS.python, py = true, run = function(n, rounds)
      local out, m = timed(("python3 %s/anchors/py_requests.py %s %d %d 16"):format(ROOT, URL, n, rounds))
      local r = result_of(out) or {}
      r.m = m
      return r
    end },
}

local TOOL = {}
for _, t in ipairs(TOOLS) do TOOL[t.name] = t end

local RUNS = {}
local function int(v) return type(v) == "number" and math.tointeger(math.floor(v)) or v end
local function record(workload, reg, n, tool, rounds, r, note)
  local m = r.m or {}
  r.requests, r.ok = int(r.requests), int(r.ok)
  local rec = {
    workload = workload, regime = reg, instances = n, tool = tool, rounds = rounds,
    requests = r.requests, ok = r.ok, wall = r.wall, rps = (r.wall and r.wall > 0 and r.requests) and r.requests / r.wall or nil,
    wall_proc = m.wall_proc, cpu = m.cpu, user = m.user, sys = m.sys, maxrss_kb = m.maxrss_kb,
    cpu_ms_per_1k = (m.cpu and r.requests and r.requests > 0) and 1000 * m.cpu / r.requests * 1000 or nil,
    note = note,
  }
  for k, v in pairs(r) do if rec[k] == nil and k ~= "m" then rec[k] = v end end
  RUNS[#RUNS + 1] = rec
  say(("  %-4s %-5s %7d %-10s %6s req %8.1f req/s  wall %6.3fs  cpu %6.3fs%s"):format(workload, reg, n, tool,
    tostring(rec.requests), rec.rps or 0, rec.wall or 0, rec.cpu or 0, note and ("  (" .. note .. ")") or ""))
  return rec
end

-- the median run of `rs` (or of `times` fresh runs) by req/s
local function median_run(tool, n, rounds, times, rs)
  if not rs then
    rs = {}
    for _ = 1, times do rs[#rs + 1] = tool.run(n, rounds) end
  end
  table.sort(rs, function(a, b)
    local ra = (a.wall and a.requests) and a.requests / a.wall or 0
    local rb = (b.wall and b.requests) and b.requests / b.wall or 0
    return ra < rb
  end)
  local mid = rs[math.floor((#rs + 1) / 2)]
  if times > 1 then
    local all = {}
    for i, r in ipairs(rs) do all[i] = (r.wall and r.requests) and r.requests / r.wall or 0 end
    mid.rps_runs = all
  end
  return mid
end

-- koophone and curl at zero latency, run alternately (koophone, curl,
-- koophone, ...): each pair's ratios see the same load, and the median of
-- the pairs is the figure (block medians per tool let load drift into it)
RUNS.pairs = {}
local function interleaved(n, rounds, times)
  local by_tool, ratios = { koophone = {}, curl = {} }, { rps = {}, cpu = {} }
  for i = 1, times do
    local k, c = TOOL.koophone.run(n, rounds), TOOL.curl.run(n, rounds)
    by_tool.koophone[i], by_tool.curl[i] = k, c
    local km, cm = k.m or {}, c.m or {}
    if km.wall_proc and cm.wall_proc and km.cpu and cm.cpu and cm.cpu > 0 then
      ratios.rps[#ratios.rps + 1] = cm.wall_proc / km.wall_proc -- same requests: req/s ratio
      ratios.cpu[#ratios.cpu + 1] = km.cpu / cm.cpu
    end
  end
  local function median(t)
    local c = {}
    for i, v in ipairs(t) do c[i] = v end
    table.sort(c)
    return c[(#c + 1) // 2]
  end
  RUNS.pairs[tostring(n)] = { rps_ratios = ratios.rps, cpu_ratios = ratios.cpu, rps_ratio = median(ratios.rps),
                    cpu_ratio = median(ratios.cpu), pairs = times }
  return by_tool
end

-- koophone and h2load at 50 ms, alternately: the same pairing for the
-- goal against h2load (each run's own time: koophone's from its first
-- request, h2load's "finished in")
RUNS.pairs50 = {}
local function interleaved50(n, rounds, times)
  local by_tool, ratios = { koophone = {}, h2load = {} }, {}
  for i = 1, times do
    local k, h = TOOL.koophone.run(n, rounds), TOOL.h2load.run(n, rounds)
    by_tool.koophone[i], by_tool.h2load[i] = k, h
    if k.wall and h.wall and k.requests and h.requests and k.wall > 0 and h.wall > 0 then
      ratios[#ratios + 1] = (k.requests / k.wall) / (h.requests / h.wall)
    end
  end
  local c = {}
  for i, v in ipairs(ratios) do c[i] = v end
  table.sort(c)
  RUNS.pairs50[tostring(n)] = { ratios = ratios, ratio = c[(#c + 1) // 2], pairs = times }
  return by_tool
end

local ok_run, run_err = pcall(function()
  -- ---------------------------------------------------------- W1
  local REGIMES = { { "zero", 0 }, { "50ms", 0.05 } }
  for _, reg in ipairs(REGIMES) do
    local name, lat = reg[1], reg[2]
    regime(lat)
    say(("== W1 sync-command, latency %s"):format(name))
    for _, n in ipairs(SIZES) do
      local per = sweep_reqs(n)
      local paired = {}
      if lat == 0 and HAS.curl then
        paired = interleaved(n, math.max(1, math.ceil(10000 / per)), REPEAT)
      elseif lat > 0 and HAS.h2load then
        paired = interleaved50(n, math.max(1, math.ceil(1280 / per)), REPEAT)
      end
      if RUNS.pairs[tostring(n)] and lat == 0 then
        local pr = RUNS.pairs[tostring(n)]
        say(("  W1   zero  %7d pairs koophone/curl: req/s %.2f, CPU %.2f (median of %d interleaved pairs)"):format(
          n, pr.rps_ratio or -1, pr.cpu_ratio or -1, pr.pairs))
      end
      if RUNS.pairs50[tostring(n)] and lat > 0 then
        local pr = RUNS.pairs50[tostring(n)]
        say(("  W1   50ms  %7d pairs koophone/h2load: req/s %.2f (median of %d interleaved pairs)"):format(
          n, pr.ratio or -1, pr.pairs))
      end
      for _, tool in ipairs(TOOLS) do
        if tool.ok then
          local nn, rounds, note = n, nil, nil
          if lat == 0 then
            local target = tool.seq and 2000 or (tool.py and 3000 or 10000)
            rounds = math.max(1, math.ceil(target / per))
          else
            if tool.seq then
              -- one request after another at 50 ms: one sweep, at most 10,000 instances
              nn, rounds = math.min(n, 10000), 1
              if nn < n then note = "capped at 10,000 instances" end
            else
              rounds = math.max(1, math.ceil(1280 / per))
            end
          end
          local times = (tool.name == "koophone" or tool.name == "h2load" or (lat == 0 and tool.name == "curl"))
            and REPEAT or 1
          local r = median_run(tool, nn, rounds, times, paired[tool.name])
          if r.ok ~= r.requests then
            note = (note and note .. "; " or "") .. ("%s of %s requests failed"):format(
              tostring((r.requests or 0) - (r.ok or 0)), tostring(r.requests))
          end
          if times > 1 then note = (note and note .. "; " or "") .. ("median of %d"):format(times) end
          record("W1", name, n, tool.name, rounds, r, note)
        end
      end
    end
  end

  -- ---------------------------------------------------------- W2
  for _, reg in ipairs(REGIMES) do
    local name, lat = reg[1], reg[2]
    say(("== W2 async-command + polling (2 s jobs), latency %s"):format(name))
    for _, n in ipairs(SIZES) do
      regime(lat)
      local out, m = timed(("%slua5.4 %s/kp.lua w2 %s n=%d conc=%d duration=2"):format(KP_ENV, ROOT, URL, n, CONC))
      local r = result_of(out) or { ok = 0 }
      r.m = m
      record("W2", name, n, "koophone", 1, r, r.summary)
    end
  end

  -- ---------------------------------------------------------- W3
  for _, reg in ipairs(REGIMES) do
    local name, lat = reg[1], reg[2]
    say(("== W3 install + restart rollout, latency %s"):format(name))
    for _, n in ipairs(SIZES) do
      regime(lat)
      local out, m = timed(("%slua5.4 %s/kp.lua w3 %s n=%d conc=%d"):format(KP_ENV, ROOT, URL, n, CONC))
      local r = result_of(out) or { ok = 0 }
      r.m = m
      if r.skipped then say("  W3 skipped: " .. r.skipped) break end
      record("W3", name, n, "koophone", 1, r, ("install %d ok in %.1fs, restart %d ok in %.1fs"):format(
        r.install_rows_ok or 0, r.install_wall or 0, r.restart_rows_ok or 0, r.restart_wall or 0))
    end
  end

  -- ---------------------------------------------------------- idle, RSS
  regime(0)
  local secs = QUICK and 10 or 30
  say(("== idle: one task of %d s jobs"):format(secs))
  do
    local out, m = timed(("%slua5.4 %s/kp.lua idle %s secs=%d"):format(KP_ENV, ROOT, URL, secs))
    local r = result_of(out) or {}
    r.m = m
    RUNS.idle = r
    say(("  cpu %.4fs over %.1fs = %.3f%% (%s polls)"):format(r.cpu or -1, r.wall or -1, r.cpu_pct or -1, tostring(r.polls)))
  end
  say("== RSS over 100 batches of W1 at 1,000 instances")
  do
    regime(0)
    local out, m = timed(("%slua5.4 %s/kp.lua rss %s n=1000 batches=100 conc=%d"):format(KP_ENV, ROOT, URL, CONC))
    local r = result_of(out) or {}
    r.m = m
    RUNS.rss = r
    say(("  RSS after batch 10 %s KB, after batch 100 %s KB (%+.1f%%)"):format(
      tostring(r.rss_ref_kb), tostring(r.rss_last_kb), 100 * (r.growth or 0)))
  end

  -- ---------------------------------------------------------- OpenResty
  if HAS.openresty then
    -- after (the waker, the sleep grid), then before them, in the same run
    for _, v in ipairs { { "ngx_ping", "" }, { "ngx_ping_before", " waker=0 slack=0" } } do
      say(("== OpenResty: /ping p99 while the worker runs 1,000-instance batches, 5 runs of 4 rounds%s")
        :format(v[2] == "" and "" or " (before: stepping driver, no sleep grid)"))
      local out, m = timed(("%slua5.4 %s/ngx_ping.lua runs=5 rounds=4 n=1000%s"):format(KP_ENV, ROOT, v[2]))
      local r = result_of(out) or {}
      r.m = m
      RUNS[v[1]] = r
      for i, x in ipairs(r.runs or {}) do
        say(("  run %d: p99 idle %.3f ms (n=%d), during %.3f ms (n=%d): %.2fx; null control %.2fx")
          :format(i, x.idle_p99 * 1000, x.idle_n, x.during_p99 * 1000, x.during_n, x.ratio, x.null_ratio or -1))
      end
    end
    say("== OpenResty: what one 1,000-instance batch costs the worker (wake-ups, CPU), after and before")
    do
      local out, m = timed(("%slua5.4 %s/ngx_batch_cost.lua batches=20 n=1000"):format(KP_ENV, ROOT))
      local r = result_of(out) or {}
      r.m = m
      RUNS.ngx_batch_cost = r
      for _, k in ipairs { "after", "before" } do
        local x = r[k] or {}
        say(("  %s: worker woken %.1f times, its waker thread %.1f, CPU %.1f ms per batch"):format(
          k, x.worker_wakeups or -1, x.thread_wakeups or -1, x.cpu_ms or -1))
      end
    end
  else
    say("== OpenResty: skipped (needs nginx's Lua module and build/luajit/koophone/core.so: make luajit-core)")
  end

  -- ---------------------------------------------------------- callgrind
  if HAS.valgrind and HAS.curl then
    say("== callgrind: W1 2,000 instances, 5 and 10 rounds, koophone vs curl")
    regime(0)
    local cg = {}
    local function total(file)
      local s = readfile(file) or ""
      return tonumber(s:match("\nsummary:%s*(%d+)") or s:match("\ntotals:%s*(%d+)"))
    end
    for _, rounds in ipairs { 5, 10 } do
      local kf = ("%s/callgrind.koophone.%d.out"):format(RES, rounds)
      local cf = ("%s/callgrind.curl.%d.out"):format(RES, rounds)
      sh(("%svalgrind --tool=callgrind --callgrind-out-file=%s lua5.4 %s/kp.lua w1 %s n=2000 rounds=%d conc=%d >/dev/null")
        :format(KP_ENV, kf, ROOT, URL, rounds, CONC))
      sh(("valgrind --tool=callgrind --callgrind-out-file=%s curl -s --no-progress-meter --parallel --parallel-max %d -K %s >/dev/null")
        :format(cf, CONC, curl_config(2000, rounds)))
      cg[rounds] = { koophone = total(kf), curl = total(cf), requests = sweep_reqs(2000) * rounds }
      sh(("callgrind_annotate %s > %s/callgrind.koophone.%d.txt"):format(kf, RES, rounds))
      sh(("callgrind_annotate %s > %s/callgrind.curl.%d.txt"):format(cf, RES, rounds))
    end
    RUNS.callgrind = cg
  end
end)
stop_emulator()
if not ok_run then error(run_err, 0) end

-- ---------------------------------------------------------------- figures
local function find(w, reg, n, tool)
  for _, r in ipairs(RUNS) do
    if r.workload == w and r.regime == reg and r.instances == n and r.tool == tool then return r end
  end
end
local GOALS = {}
local function goal(name, value, cmp, target, fmt, detail)
  local met
  if value == nil then met = nil elseif cmp == ">=" then met = value >= target else met = value <= target end
  GOALS[#GOALS + 1] = { goal = name, value = value, target = target, cmp = cmp, met = met, detail = detail }
  return value and (fmt):format(value) or "n/a"
end
local BIG = SIZES[2] or SIZES[1]
local pz = RUNS.pairs[tostring(BIG)]
if pz and pz.rps_ratio then
  -- same requests; both whole processes (start to exit), so both pay their
  -- startup; the median of interleaved pairs
  local list = function(t) local o = {} for i, v in ipairs(t) do o[i] = ("%.2f"):format(v) end return table.concat(o, ", ") end
  goal(("W1 zero latency, %d instances: koophone/curl req/s (process wall, median of %d pairs)"):format(BIG, pz.pairs),
    pz.rps_ratio, ">=", 1.0, "%.2f", "pairs: " .. list(pz.rps_ratios))
  goal(("W1 zero latency, %d instances: koophone/curl CPU (user+sys, median of %d pairs)"):format(BIG, pz.pairs),
    pz.cpu_ratio, "<=", 1.1, "%.2f", "pairs: " .. list(pz.cpu_ratios))
end
do
  local p = RUNS.pairs50[tostring(BIG)]
  if p and p.ratio then
    local l = {}
    for i, v in ipairs(p.ratios) do l[i] = ("%.2f"):format(v) end
    goal(("W1 50 ms, %d instances: koophone/h2load req/s (median of %d interleaved pairs)"):format(BIG, p.pairs),
      p.ratio, ">=", 0.98, "%.2f", "pairs: " .. table.concat(l, ", "))
  end
end
for _, w in ipairs { "W2", "W3" } do
  local r = find(w, "zero", 100000, "koophone")
  if r and r.maxrss_kb then
    goal(("%s zero latency, 100,000 instances: peak RSS, MB"):format(w), r.maxrss_kb / 1024, "<=", 128, "%.1f")
  end
end
if RUNS.ngx_ping and RUNS.ngx_ping.runs then
  local function tally(runs)
    local worst, met, null_worst, null_met = 0, 0, 0, 0
    for _, x in ipairs(runs or {}) do
      worst = math.max(worst, x.ratio)
      if x.ratio <= 1.2 then met = met + 1 end
      null_worst = math.max(null_worst, x.null_ratio or 0)
      if (x.null_ratio or 99) <= 1.2 then null_met = null_met + 1 end
    end
    return worst, met, null_worst, null_met, #(runs or {})
  end
  local worst, met, null_worst, null_met, n = tally(RUNS.ngx_ping.runs)
  local b_worst, b_met, _, _, b_n = tally(RUNS.ngx_ping_before and RUNS.ngx_ping_before.runs)
  goal("OpenResty /ping p99 during 1,000-instance batches / idle p99 (worst of the runs)", worst, "<=", 1.2, "%.2f",
    ("%d of %d runs at or under 1.2x (each pools 4 rounds); the null control %d of %d, worst %.2f;" ..
     " before the waker and the sleep grid %d of %d, worst %.2f%s"):format(met, n, null_met, n, null_worst,
     b_met, b_n, b_worst, RUNS.ngx_ping.pinned and "" or " (processes not pinned)"))
end
for _, n in ipairs(SIZES) do
  local k = find("W1", "50ms", n, "koophone")
  for _, a in ipairs { { "luasocket", 40 }, { "python", 3 }, { "curl", 0.95 } } do
    local o = find("W1", "50ms", n, a[1])
    if k and o and k.rps and o.rps then
      goal(("W1 50 ms, %d instances: koophone/%s req/s"):format(n, a[1]), k.rps / o.rps, ">=", a[2], "%.2f",
        ("%.0f vs %.1f req/s"):format(k.rps, o.rps))
    end
  end
end
do
  local peak
  for _, r in ipairs(RUNS) do
    if r.tool == "koophone" and r.instances == 10000 and r.maxrss_kb then peak = math.max(peak or 0, r.maxrss_kb) end
  end
  if peak then goal("peak RSS, 10,000 instances (W1/W2/W3), MB", peak / 1024, "<=", 64, "%.1f") end
end
if RUNS.rss and RUNS.rss.growth then
  goal("RSS growth, batch 10 -> batch 100", 100 * RUNS.rss.growth, "<=", 5, "%+.1f%%",
    ("%d KB -> %d KB"):format(RUNS.rss.rss_ref_kb, RUNS.rss.rss_last_kb))
end
if RUNS.idle and RUNS.idle.cpu_pct then
  goal(("CPU while waiting on a %d s task, %% of wall"):format(RUNS.idle.secs), RUNS.idle.cpu_pct, "<=", 0.5, "%.3f",
    ("%.3f s CPU in %.1f s, %d polls"):format(RUNS.idle.cpu, RUNS.idle.wall, RUNS.idle.polls or 0))
end
for _, r in ipairs(RUNS) do
  if r.workload == "W2" and r.lag_max then
    local bound = 0.1 * r.duration + r.poll_interval
    goal(("W2 %s %d: detection lag (max), s"):format(r.regime, r.instances), r.lag_max, "<=", bound, "%.3f",
      ("mean %.3f s, %.2f polls per task, bound %.2f s"):format(r.lag_mean, r.polls_per_task or 0, bound))
  end
end
if RUNS.callgrind then
  local a, b = RUNS.callgrind[5], RUNS.callgrind[10]
  if a and b and a.koophone and b.koophone and a.curl and b.curl then
    local dk = (b.koophone - a.koophone) / (b.requests - a.requests)
    local dc = (b.curl - a.curl) / (b.requests - a.requests)
    RUNS.callgrind.per_request = { koophone = dk, curl = dc }
    goal("callgrind instructions, W1 2,000 x 10 rounds: koophone/curl (totals)", b.koophone / b.curl, "<=", 1.3, "%.2f",
      ("%.3g vs %.3g Ir; per extra request %.0f vs %.0f Ir (ratio %.2f)"):format(b.koophone, b.curl, dk, dc, dk / dc))
    goal("callgrind instructions per extra W1 request (koophone)", dk, "<=", 760000, "%.0f",
      ("curl %.0f"):format(dc))
  end
end

-- ---------------------------------------------------------------- table
local lines = {}
local function out(s) lines[#lines + 1] = s print(s) end
out("")
out(("koophone benchmarks — %s, emulator %s, concurrency %d; %s"):format(os.date("!%Y-%m-%d %H:%M UTC"), V.emulator, CONC,
  FULL and "1k/10k/100k instances" or "BENCH_SCALE=small"))
out("")
out("| workload | latency | instances | tool | requests | ok | wall s | req/s | proc wall s | CPU s | CPU ms/1k req | max RSS MB | note |")
out("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
local function f(v, fmt) return v and (fmt):format(v) or "-" end
for _, r in ipairs(RUNS) do
  out(("| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |"):format(r.workload, r.regime, r.instances, r.tool,
    tostring(r.requests or "-"), tostring(r.ok or "-"), f(r.wall, "%.3f"), f(r.rps, "%.0f"), f(r.wall_proc, "%.2f"),
    f(r.cpu, "%.2f"), f(r.cpu_ms_per_1k, "%.0f"), f(r.maxrss_kb and r.maxrss_kb / 1024, "%.1f"), r.note or ""))
end
local ceiling = find("W1", "zero", BIG, "h2load")
out("")
if ceiling then
  out(("Server ceiling (h2load --h1, -c %d, same emulator): %.0f req/s at zero latency, %.0f req/s at 50 ms."):format(
    CONC, ceiling.rps or 0, (find("W1", "50ms", BIG, "h2load") or {}).rps or 0))
end
if RUNS.callgrind and RUNS.callgrind[10] then
  local c = RUNS.callgrind
  out(("callgrind, W1 2,000 instances: 5 rounds (%d req) koophone %.4g Ir, curl %.4g Ir; 10 rounds (%d req) koophone %.4g Ir, curl %.4g Ir"):format(
    c[5].requests, c[5].koophone or 0, c[5].curl or 0, c[10].requests, c[10].koophone or 0, c[10].curl or 0))
end
out("")
out("| goal | measured | target | met |")
out("|---|---:|---:|---|")
for _, g in ipairs(GOALS) do
  out(("| %s | %s | %s %s | %s |"):format(g.goal, g.value and ("%.3f"):format(g.value) or "n/a", g.cmp, tostring(g.target),
    g.met == nil and "n/a" or (g.met and "yes" or "NO") .. (g.detail and (" — " .. g.detail) or "")))
end
local tf = io.open(RES .. "/table.md", "w") tf:write(table.concat(lines, "\n"), "\n") tf:close()

-- ---------------------------------------------------------------- json
local jf = io.open(ROOT .. "/results.json", "w")
local runs = {}
for i, r in ipairs(RUNS) do runs[i] = r end
jf:write(cjson.encode { date = os.date("!%Y-%m-%dT%H:%M:%SZ"), scale = FULL and "full" or "small", quick = QUICK,
  concurrency = CONC, versions = V, runs = runs, idle = RUNS.idle, rss = RUNS.rss, callgrind = RUNS.callgrind,
  pairs = RUNS.pairs, pairs50 = RUNS.pairs50, ngx_ping = RUNS.ngx_ping, ngx_ping_before = RUNS.ngx_ping_before,
  ngx_batch_cost = RUNS.ngx_batch_cost,
  goals = GOALS })
jf:close()

-- ---------------------------------------------------------------- chart
if HAS.gnuplot then
  local tools = {}
  for _, t in ipairs(TOOLS) do if t.ok then tools[#tools + 1] = t.name end end
  local dat = TMP .. "/chart.dat"
  local df = io.open(dat, "w")
  df:write("cell ", table.concat(tools, " "), "\n")
  for _, reg in ipairs { "zero", "50ms" } do
    for _, n in ipairs(SIZES) do
      local row = { ("W1-%s-%dk"):format(reg, n // 1000) }
      for _, t in ipairs(tools) do
        local r = find("W1", reg, n, t)
        row[#row + 1] = (r and r.rps) and ("%.1f"):format(r.rps) or "-"
      end
      df:write(table.concat(row, " "), "\n")
    end
  end
  df:close()
  local gp = io.open(TMP .. "/chart.gp", "w")
  gp:write(([[
set terminal pngcairo size 1100,600 noenhanced
set output '%s/chart.png'
set title 'W1 sync-command: requests/s per tool (log scale; same emulator, %s)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set datafile missing '-'
set logscale y
set yrange [1:*]
set ylabel 'requests/s'
set key outside right top
set grid ytics
plot for [i=2:%d] '%s' using i:xtic(1) title columnheader(i)
]]):format(ROOT, V.emulator, #tools + 1, dat))
  gp:close()
  local _, rc = sh("gnuplot " .. TMP .. "/chart.gp")
  if rc ~= 0 then
    -- pngcairo may be absent in gnuplot-nox builds: fall back to png
    local s = readfile(TMP .. "/chart.gp"):gsub("pngcairo", "png")
    local g2 = io.open(TMP .. "/chart.gp", "w") g2:write(s) g2:close()
    sh("gnuplot " .. TMP .. "/chart.gp")
  end
  print("chart: " .. ROOT .. "/chart.png")
else
  print("chart: skipped (gnuplot missing; apt-get install gnuplot-nox)")
end
print("results: " .. ROOT .. "/results.json, table: " .. RES .. "/table.md, log: " .. LOG)
sh("rm -rf " .. TMP)
