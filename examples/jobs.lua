-- CPH jobs: ShowJob for one job, ListJobs (paged for you) for a request.
local koophone = require "koophone"

local client = assert(koophone.new())
local task = assert(client:restart_phones { "ph000010", "ph000011", "ph000012" })
assert(task:wait { timeout = 60 })
for _, row in ipairs(assert(client:jobs { request_id = task.id })) do
  print("ListJobs", row.phone_id, row.status, row.job_id)
end
local one = assert(client:job(task:results()[1].job_id))
print("ShowJob", one.phone_id, one.status, one.begin_time, one.end_time)
