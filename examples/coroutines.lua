-- Many tasks waiting at once in one thread: code that reads as if it
-- blocked, run by koophone.spawn / koophone.run.
local koophone = require "koophone"

local client = assert(koophone.new())
local done = 0
for chunk = 0, 9 do
  koophone.spawn(function()
    local ids = {}
    for i = 1, 100 do ids[i] = ("kp%06d"):format(chunk * 100 + i) end
    local task = assert(client:async_command("sleep 1", ids))
    local rows = assert(task:wait { timeout = 60 })
    done = done + #rows
  end)
end
local t0 = koophone.now()
koophone.run()
print(("%d instances in %.1fs"):format(done, koophone.now() - t0))
