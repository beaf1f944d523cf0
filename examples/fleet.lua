-- The whole fleet: which instances there are and in which state (read one
-- page at a time), what is installed on one, a reboot followed until the
-- instance runs again, and a CPH phone's detail.
local koophone = require "koophone"
local sched = require "koophone.sched"

local client = assert(koophone.new())

local states, n = {}, 0
for inst, msg in assert(client:each_instance { page_size = 200 }) do
  if not inst then error(msg) end
  n = n + 1
  states[inst.state] = (states[inst.state] or 0) + 1
end
print(("instances: %d, %d running"):format(n, states.running or 0))

for _, app in ipairs(assert(client:apps("kp000001", { app_type = "system" }))) do
  print("app", app.app_pkg, app.app_version)
end

assert(client:reboot { "kp000002" })
local deadline = koophone.now() + 60
repeat
  local row = assert(client:instance_status { "kp000002" })[1]
  print("kp000002", row.state)
  if row.state ~= "running" then sched.sleep(client.engine, 0.2) end
until row.state == "running" or koophone.now() > deadline

local phone = assert(client:phone("ph000001"))
print("phone", phone.phone_id, phone.state, phone.vendor_status, phone.image_version)
