-- Restart CPH phones, one with new attributes, and follow the jobs.
local koophone = require "koophone"

local client = assert(koophone.new()) -- needs KOOPHONE_CPH_ENDPOINT and KOOPHONE_PROJECT_ID
local task, err = client:restart_phones {
  { phone_id = "ph000001", property = { wifi_name = "lab_wifi", phone_num = "13666666666" } },
  "ph000002",
}
if not task then io.stderr:write(tostring(err), "\n") os.exit(1) end
print("request " .. task.id)
local rows = assert(task:wait { timeout = 120 })
for _, row in ipairs(rows) do print(row.phone_id, row.status, row.job_id or row.message) end
