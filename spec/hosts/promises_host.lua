-- The promises of spec/promises_spec.lua inside another host's loop
-- (cqueues or luv): two host coroutines waiting on one task are both
-- woken; a wait abandoned by its timeout while a status query stalls
-- returns on time; a client closed by one coroutine leaves the others
-- running. Prints one line of JSON. Args: host url token project_id
local cjson = require "cjson"
local koophone = require "koophone"

local host, url, token, project = arg[1], arg[2], arg[3], arg[4]
local function new() return assert(koophone.new { token = token, endpoint = url, cph_endpoint = url,
                                                  project_id = project, poll_interval = 0.1 }) end
local client, doomed = new(), new()
local out = {}

-- what each host coroutine does
local jobs = {}
local shared -- one task, two waiters
jobs[1] = function()
  shared = assert(client:async_command("echo two", { "kp000001", "kp000002" }))
  out.first = #assert(shared:wait { timeout = 10 })
end
jobs[2] = function()
  while not shared do koophone.now() ; require("koophone.sched").sleep(client.engine, 0.01) end
  out.second = #assert(shared:wait { timeout = 10 })
end
jobs[3] = function()
  local t = assert(doomed:async_command("echo doomed", { "kp000003" }))
  doomed:close()
  local rows, _, err = t:wait { timeout = 5 }
  out.closed = rows and "rows" or err.kind
end
jobs[4] = function()
  -- the stall fault (installed by the spec) holds task queries of kp000009's task
  local t = assert(client:async_command("echo stalled", { "kp000009" }))
  local t0 = koophone.now()
  local _, _, err = t:wait { timeout = 0.5 }
  out.abandoned = { kind = err.kind, took = koophone.now() - t0 }
end

-- the abandoned wait first, alone, so that the one stalled query is its
-- own; then the others at once
if host == "cqueues" then
  local cqueues = require "cqueues"
  require("koophone.sched.cqueues").install()
  local cq = cqueues.new()
  cq:wrap(function()
    jobs[4]()
    for i = 1, 3 do cq:wrap(jobs[i]) end
  end)
  assert(cq:loop())
else
  local kuv = require("koophone.sched.luv").install()
  kuv.spawn(function()
    jobs[4]()
    for i = 1, 3 do kuv.spawn(jobs[i]) end
  end)
  kuv.run()
end
client:close()
print(cjson.encode(out))
