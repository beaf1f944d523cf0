-- Runs a batch inside a luv (libuv) loop beside a 10 ms repeating timer;
-- prints one line of JSON. Args: url token project_id n
local uv = require "luv"
local cjson = require "cjson"
local koophone = require "koophone"
local batch = require "koophone.batch"
local kuv = require("koophone.sched.luv").install()

local url, token, project, n = arg[1], arg[2], arg[3], tonumber(arg[4] or 1000)
local client = assert(koophone.new { token = token, endpoint = url, cph_endpoint = url,
                                     project_id = project, poll_interval = 0.1 })
local ids = {}
for i = 0, n - 1 do ids[#ids + 1] = ("kp%06d"):format(i) end

local report, ticks, worst = nil, 0, 0
local last = koophone.now()
local ticker = uv.new_timer()
ticker:start(10, 10, function() -- the host's own work: must keep its rhythm
  local t = koophone.now()
  if t - last > worst then worst = t - last end
  last = t
  ticks = ticks + 1
end)
kuv.spawn(function()
  report = assert(batch.run(client, "echo hi", ids, { concurrency = 16 }))
  ticker:close()
end)
kuv.run()
local s = report.summary
print(cjson.encode { total = s.total, ok = s.ok, rows = #report.rows, elapsed = s.elapsed,
                     ticks = ticks, worst_tick = worst, lua = _VERSION })
