-- Start a slow command on many instances and wait for every job.
local koophone = require "koophone"

local client = assert(koophone.new())
local ids = {}
for i = 1, 100 do ids[i] = ("kp%06d"):format(i) end
local task = assert(client:async_command("sleep 1", ids))
print("task " .. task.id .. ": " .. #ids .. " jobs")
local rows, _, err = task:wait {
  timeout = 60,
  on_progress = function(done, total) io.stderr:write(("\r%d/%d done"):format(done, total)) end,
}
io.stderr:write("\n")
rows = rows or err.rows
local c = task:counts()
print(("ok %d, failed %d, error %d, timeout %d, %d status queries"):format(c.ok, c.failed, c.error, c.timeout, task.polls))
os.exit(c.ok == #rows and 0 or 1)
