-- Query an async task once by id, then follow it to the end.
local koophone = require "koophone"

local client = assert(koophone.new())
local started = assert(client:async_command("echo hello", { "kp000003" }))
local jobs = assert(client:query_task(started.id)) -- one GET, rows keyed by job id
for _, job in ipairs(jobs) do print("job " .. job.job_id, job.status) end
local task = assert(client:task(started.id, { jobs = started.jobs })) -- re-attach by id
for _, row in ipairs(assert(task:wait { timeout = 30 })) do print(row.id, row.status, row.output) end
