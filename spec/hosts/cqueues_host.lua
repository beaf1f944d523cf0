-- Runs a batch inside a cqueues controller beside a 10 ms ticker; prints
-- one line of JSON. Args: url token project_id n
local cqueues = require "cqueues"
local cjson = require "cjson"
local koophone = require "koophone"
local batch = require "koophone.batch"
local adapter = require("koophone.sched.cqueues").install()

local url, token, project, n = arg[1], arg[2], arg[3], tonumber(arg[4] or 1000)
local client = assert(koophone.new { token = token, endpoint = url, cph_endpoint = url,
                                     project_id = project, poll_interval = 0.1 })
local ids = {}
for i = 0, n - 1 do ids[#ids + 1] = ("kp%06d"):format(i) end

local cq = cqueues.new()
local done, report, ticks, worst = false, nil, 0, 0
cq:wrap(function()
  report = assert(batch.run(client, "echo hi", ids, { concurrency = 16 }))
  done = true
end)
cq:wrap(function() -- the host's own work: must keep its 10 ms rhythm
  local last = koophone.now()
  while not done do
    cqueues.sleep(0.01)
    local t = koophone.now()
    if t - last > worst then worst = t - last end
    last = t
    ticks = ticks + 1
  end
end)
-- the engine as a pollable, for hosts that poll it themselves
cq:wrap(function()
  local p = adapter.pollable(client.engine)
  cqueues.poll(p, 0.001)
end)
local ok, err = cq:loop()
assert(ok, err)
local s = report.summary
print(cjson.encode { total = s.total, ok = s.ok, rows = #report.rows, elapsed = s.elapsed,
                     ticks = ticks, worst_tick = worst, lua = _VERSION })
