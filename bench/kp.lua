-- bench/kp.lua: the koophone side of the benchmarks, run by bench/run.lua
-- as a child process (so that its CPU time and peak RSS can be measured).
--
--   lua5.4 bench/kp.lua MODE URL [key=value ...]
--
-- MODE: w1 (sync-command sweeps), w2 (async-command + polling), w3 (install +
-- restart rollout through koophone.batch), idle (CPU while waiting on one
-- long task), rss (RSS over repeated batches).
-- Prints one line "RESULT <json>" on stdout; every figure in it is measured.
local koophone = require "koophone"
local cjson = require "cjson"

local mode, url = arg[1], arg[2]
local opt = {}
for i = 3, #arg do
  local k, v = arg[i]:match("^([%w_]+)=(.*)$")
  if k then opt[k] = tonumber(v) or v end
end
local N = opt.n or 1000
local ROUNDS = opt.rounds or 1
local CONC = opt.conc or 64
local CMD = opt.cmd or "getprop ro.build.version.release"

local function ids_of(first, last)
  local t = {}
  for i = first, last do t[#t + 1] = ("kp%06d"):format(i) end
  return t
end

-- the chunks of one sweep over N instances
local function chunks(size)
  local out = {}
  for first = 0, N - 1, size do out[#out + 1] = ids_of(first, math.min(first + size, N) - 1) end
  return out
end

local function rss_kb()
  local f = io.open("/proc/self/status")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

local function new_client(extra)
  local o = { token = "emulator-token", endpoint = url, cph_endpoint = url, project_id = "emulator-project" }
  for k, v in pairs(extra or {}) do o[k] = v end
  return assert(koophone.new(o))
end

-- runs `work(item)` for every item of `queue`, `conc` coroutines at a time
local function pool(queue, conc, work)
  local next_i = 0
  for _ = 1, math.min(conc, #queue) do
    koophone.spawn(function()
      while true do
        next_i = next_i + 1
        local item = queue[next_i]
        if not item then return end
        work(item)
      end
    end)
  end
  koophone.run()
end

local function emit(t)
  t.rss_end_kb = rss_kb()
  t.lua_kb = collectgarbage("count")
  io.write("RESULT ", cjson.encode(t), "\n")
  io.stdout:flush()
end

local function w1_queue()
  local base = chunks(32)
  local q = {}
  for _ = 1, ROUNDS do
    for i = 1, #base do q[#q + 1] = base[i] end
  end
  return q
end

local function w1_run(c, q)
  local ok, fail, rows_ok = 0, 0, 0
  pool(q, CONC, function(ids)
    local rows, err = c:sync_command(CMD, ids)
    if rows then
      ok = ok + 1
      for i = 1, #rows do if rows[i].status == "ok" then rows_ok = rows_ok + 1 end end
    else
      fail = fail + 1
      if fail <= 3 then io.stderr:write("kp w1: ", tostring(err and err.message or err), "\n") end
    end
  end)
  return ok, fail, rows_ok
end

if mode == "w1" then
  local c = new_client()
  local q = w1_queue()
  local t0 = koophone.now()
  local ok, fail, rows_ok = w1_run(c, q)
  local wall = koophone.now() - t0
  emit { requests = #q, ok = ok, failed = fail, rows_ok = rows_ok, wall = wall }

elseif mode == "w2" then
  -- async-command on every instance (chunks of 100), every task followed to
  -- its end, through koophone.batch (concurrency CONC). Per task: polls;
  -- detection lag = when the job was seen finished (row.elapsed, counted from
  -- the task's creation) minus the job's duration.
  local batch = require "koophone.batch"
  local c = new_client()
  local dur = opt.duration or 2
  local t0 = koophone.now()
  local report, err = batch.run(c, CMD, ids_of(0, N - 1), { mode = "async", concurrency = CONC, timeout = 300 })
  local wall = koophone.now() - t0
  if not report then emit { error = tostring(err and err.message or err), ok = 0, requests = 0, wall = wall } return end
  local rows_ok, nlag, sumlag, maxlag, polls_by_task = 0, 0, 0, -math.huge, {}
  for _, r in ipairs(report.rows) do
    if r.status == "ok" then rows_ok = rows_ok + 1 end
    if r.elapsed then
      local lag = r.elapsed - dur
      nlag, sumlag = nlag + 1, sumlag + lag
      if lag > maxlag then maxlag = lag end
    end
    if r.task_id and r.polls then
      polls_by_task[r.task_id] = math.max(polls_by_task[r.task_id] or 0, r.polls)
    end
  end
  local tasks, polls = 0, 0
  for _, p in pairs(polls_by_task) do tasks, polls = tasks + 1, polls + p end
  emit { requests = c.transport.stats.requests, tasks = tasks, ok = rows_ok == N and c.transport.stats.requests or 0,
         rows_ok = rows_ok, wall = wall, polls_per_task = tasks > 0 and polls / tasks or nil,
         lag_mean = nlag > 0 and sumlag / nlag or nil, lag_max = nlag > 0 and maxlag or nil,
         duration = dur, poll_interval = c.poll_interval, summary = tostring(report) }

elseif mode == "w2spawn" then
  -- the same through koophone.spawn + task:wait() in 64 coroutines (the
  -- documented way); gives up after `limit` seconds
  local c = new_client()
  local q = chunks(100)
  local done_tasks = 0
  local t0 = koophone.now()
  local pool_limit = opt.limit or 30
  local next_i = 0
  for _ = 1, math.min(CONC, #q) do
    koophone.spawn(function()
      while true do
        next_i = next_i + 1
        local ids = q[next_i]
        if not ids then return end
        local task = c:async_command(CMD, ids)
        if task and task:wait { timeout = 60 } then done_tasks = done_tasks + 1 end
      end
    end)
  end
  local finished = koophone.run(pool_limit)
  emit { finished = finished, tasks = #q, done_tasks = done_tasks, wall = koophone.now() - t0,
         requests = c.transport.stats.requests, ok = finished and 1 or 0 }

elseif mode == "w3" then
  local ok_b, batch = pcall(require, "koophone.batch")
  if not ok_b then emit { skipped = "koophone.batch is not there: " .. tostring(batch):match("[^\n]*") } return end
  local c = new_client()
  local ids = ids_of(0, N - 1)
  local phones = {}
  for i = 0, N - 1 do phones[#phones + 1] = ("ph%06d"):format(i) end
  local app = { object_name = "apps/bench.apk", file_name = "bench.apk", object_version = "1",
                object_size = 1024, install_package_url = "https://obs.example.com/apps/bench.apk" }
  local function count_ok(r)
    local n = 0
    if type(r) == "table" then
      local list = r.rows or r
      for _, row in ipairs(list) do if type(row) == "table" and row.status == "ok" then n = n + 1 end end
    end
    return n
  end
  local t0 = koophone.now()
  local out = {}
  local ok1, r1, e1 = pcall(batch.install, c, app, ids, { concurrency = CONC })
  out.install_ok = ok1 and r1 ~= nil
  if not out.install_ok then out.install_error = tostring(ok1 and (e1 and (e1.message or e1)) or r1) end
  local t1 = koophone.now()
  -- a rollout keeps what it needs of a step (here its counts), not the
  -- whole report, while the next step runs
  out.install_rows_ok = count_ok(ok1 and r1)
  r1 = nil -- luacheck: ignore 311
  local ok2, r2, e2 = pcall(batch.restart, c, phones, { concurrency = CONC })
  out.restart_ok = ok2 and r2 ~= nil
  if not out.restart_ok then out.restart_error = tostring(ok2 and (e2 and (e2.message or e2)) or r2) end
  local t2 = koophone.now()
  out.restart_rows_ok = count_ok(ok2 and r2)
  out.install_wall, out.restart_wall, out.wall = t1 - t0, t2 - t1, t2 - t0
  out.requests = c.transport.stats.requests
  out.ok = (out.install_ok and out.restart_ok) and out.requests or 0
  emit(out)

elseif mode == "idle" then
  -- one task whose jobs take `secs` seconds; CPU of this process while waiting
  local secs = opt.secs or 30
  local c = new_client()
  local task = assert(c:async_command("sleep " .. secs, ids_of(0, 99)))
  local cpu0, t0 = os.clock(), koophone.now()
  local rows = task:wait { timeout = secs + 60 }
  local cpu, wall = os.clock() - cpu0, koophone.now() - t0
  local okn = 0
  for _, r in ipairs(rows or {}) do if r.status == "ok" then okn = okn + 1 end end
  emit { secs = secs, wall = wall, cpu = cpu, cpu_pct = 100 * cpu / wall, polls = task.polls, rows_ok = okn,
         requests = c.transport.stats.requests, ok = okn == 100 and 1 or 0 }

elseif mode == "rss" then
  -- the same W1 batch over and over; RSS after each one
  local batches = opt.batches or 100
  local c = new_client()
  local q = chunks(32)
  local series, fails = {}, 0
  local t0 = koophone.now()
  for b = 1, batches do
    local _, fail = w1_run(c, q)
    fails = fails + fail
    series[b] = rss_kb()
  end
  local wall = koophone.now() - t0
  local ref = series[math.min(10, batches)]
  local growth = (series[batches] - ref) / ref
  emit { batches = batches, requests = batches * #q, failed = fails, ok = batches * #q - fails, wall = wall,
         rss_first_kb = series[1], rss_ref_kb = ref, rss_last_kb = series[batches],
         rss_max_kb = math.max(table.unpack(series)), growth = growth }
else
  io.stderr:write("usage: lua5.4 bench/kp.lua w1|w2|w3|idle|rss URL [n=..] [rounds=..] [conc=..]\n")
  os.exit(2)
end
