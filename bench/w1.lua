-- bench/w1.lua: only the W1 figures of bench/run.lua, quickly, for
-- performance work on the request path (see docs/bench.md).
--
--   lua5.4 bench/w1.lua callgrind   instructions per extra W1 request, koophone and curl
--   lua5.4 bench/w1.lua pairs       W1 zero latency, koophone and curl --parallel run
--                                   alternately (BENCH_REPEAT pairs, default 3), medians
--   lua5.4 bench/w1.lua both
--
-- callgrind: `kp.lua w1` and `curl --parallel --parallel-max 64 -K cfg` on 2,000
-- instances, 5 and 10 rounds (315 and 630 requests) under valgrind's callgrind;
-- per extra request = (Ir(10 rounds) - Ir(5 rounds)) / 315, which leaves out
-- start-up (loading Lua, libcurl, OpenSSL). The .out files stay in
-- bench/results/ (callgrind_annotate --inclusive=yes bench/results/w1.koophone.10.out).
-- pairs: 10,000 instances, 32 rounds-worth of 10,016 requests, each tool a
-- whole process under /usr/bin/time: req/s = requests / process wall, CPU =
-- user + sys. Starts its own emulator (1 nginx worker, zero latency).
package.path = "lua/?.lua;lua/?/init.lua;./?.lua;" .. package.path
local cjson = require "cjson"

local MODE = arg[1] or "both"
local REPEAT = tonumber(os.getenv("BENCH_REPEAT") or "") or 3
local CONC = 64
local KP_ENV = 'env LUA_PATH="lua/?.lua;lua/?/init.lua;./?.lua;;" LUA_CPATH="build/lua5.4/?.so;;" '
local RES = "bench/results"
os.execute("mkdir -p " .. RES)

local function sh(cmd)
  local p = io.popen(cmd .. " 2>>" .. RES .. "/w1.log")
  local out = p:read("a")
  p:close()
  return out
end
local function trim(s) return (s or ""):gsub("^%s+", ""):gsub("%s+$", "") end
local function readfile(p) local f = io.open(p) if not f then return nil end local s = f:read("a") f:close() return s end

local TMP = trim(sh("mktemp -d /tmp/koophone-w1.XXXXXX"))
do
  local f = io.open(TMP .. "/scenario.json", "w")
  f:write(cjson.encode { fleet = { instances = 10000, phones = 10000 }, latency = { default = 0 },
                         durations = { default = 2 } })
  f:close()
end
local URL = trim(sh(("TMPDIR=%s bin/koophone-emulator start --workers 1 --scenario %s/scenario.json"):format(TMP, TMP)))
  :match("[^\n]*")
if not URL:match("^http://") then error("the emulator did not start: " .. URL) end

-- the same curl requests in every W1 figure (bench/curl_w1.lua)
local function curl_config(n, rounds) return require("bench.curl_w1").config(TMP, URL, n, rounds) end

local function kp_cmd(n, rounds, wrap)
  return ("%s%slua5.4 bench/kp.lua w1 %s n=%d rounds=%d conc=%d"):format(KP_ENV, wrap or "", URL, n, rounds, CONC)
end
local function curl_cmd(n, rounds)
  return ("curl -s --no-progress-meter --parallel --parallel-max %d -K %s"):format(CONC, curl_config(n, rounds))
end

local function timed(cmd)
  local tf = os.tmpname()
  local out = sh(("/usr/bin/time -f 'TIME %%e %%U %%S' -o %s %s"):format(tf, cmd))
  local e, u, s = (readfile(tf) or ""):match("TIME ([%d.]+) ([%d.]+) ([%d.]+)")
  os.remove(tf)
  return out, tonumber(e), (tonumber(u) or 0) + (tonumber(s) or 0)
end

local function median(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  return s[(#s + 1) // 2]
end

local ok_run, err = pcall(function()
  if MODE == "callgrind" or MODE == "both" then
    local ir = {}
    local function total(file)
      local s = readfile(file) or ""
      return tonumber(s:match("\nsummary:%s*(%d+)") or s:match("\ntotals:%s*(%d+)"))
    end
    for _, rounds in ipairs { 5, 10 } do
      local kf, cf = ("%s/w1.koophone.%d.out"):format(RES, rounds), ("%s/w1.curl.%d.out"):format(RES, rounds)
      local out = sh(kp_cmd(2000, rounds, ("valgrind --tool=callgrind --callgrind-out-file=%s "):format(kf)))
      local r = cjson.decode(out:match("RESULT (%b{})") or "{}")
      if r.ok ~= r.requests or not r.requests then error("koophone W1 failed under callgrind: " .. out) end
      sh(("valgrind --tool=callgrind --callgrind-out-file=%s %s >/dev/null"):format(cf, curl_cmd(2000, rounds)))
      ir[rounds] = { koophone = total(kf), curl = total(cf) }
    end
    local extra = 63 * 5
    local dk = (ir[10].koophone - ir[5].koophone) / extra
    local dc = (ir[10].curl - ir[5].curl) / extra
    print(("callgrind W1 2,000 instances: koophone %d / %d Ir (5 / 10 rounds), curl %d / %d Ir"):format(
      ir[5].koophone, ir[10].koophone, ir[5].curl, ir[10].curl))
    print(("per extra request: koophone %.0f Ir, curl %.0f Ir, ratio %.2f"):format(dk, dc, dk / dc))
  end
  if MODE == "pairs" or MODE == "both" then
    local n, rounds = 10000, 32
    local reqs = 313 * rounds
    local kr, kc, cr, cc = {}, {}, {}, {}
    for i = 1, REPEAT do
      local out, wall, cpu = timed(kp_cmd(n, rounds))
      local r = cjson.decode(out:match("RESULT (%b{})") or "{}")
      if r.ok ~= reqs then error("koophone W1: " .. tostring(r.ok) .. " of " .. reqs .. " ok") end
      kr[i], kc[i] = reqs / wall, cpu
      local cout, cwall, ccpu = timed(curl_cmd(n, rounds))
      local ok = 0
      for code in cout:gmatch("(%d+)\n") do if code == "200" then ok = ok + 1 end end
      if ok ~= reqs then error("curl W1: " .. ok .. " of " .. reqs .. " ok") end
      cr[i], cc[i] = reqs / cwall, ccpu
      print(("pair %d: koophone %.0f req/s, CPU %.2f s; curl %.0f req/s, CPU %.2f s"):format(i, kr[i], kc[i], cr[i], cc[i]))
    end
    local mk, mc = median(kr), median(cr)
    print(("W1 zero latency, 10,000 instances, %d requests, median of %d pairs: koophone %.0f req/s, CPU %.2f s; " ..
      "curl %.0f req/s, CPU %.2f s; req/s ratio %.2f, CPU ratio %.2f"):format(reqs, REPEAT, mk, median(kc), mc,
      median(cc), mk / mc, median(kc) / median(cc)))
  end
end)
sh(("TMPDIR=%s bin/koophone-emulator stop %s"):format(TMP, URL))
sh("rm -rf " .. TMP)
if not ok_run then error(err, 0) end
