--- cqueues: koophone waits that yield to the cqueues controller.
--
--     local cqueues = require "cqueues"
--     require("koophone.sched.cqueues").install()
--     local cq = cqueues.new()
--     cq:wrap(function() local report = batch.run(client, "echo hi", ids) end)
--     cq:wrap(function() ... other cqueues work keeps running ... end)
--     assert(cq:loop())
--
-- Inside a coroutine run by a cqueues controller, a wait polls (with
-- `cqueues.poll`) the sockets curl reports through `engine:fds()`, with
-- `engine:timeout()` as the timeout (capped at `max_step`, since curl may
-- replace a socket between two polls); then `engine:perform()`. Outside a
-- cqueues coroutine, waits block in `engine:wait()` as usual.
-- `M.pollable(engine)` gives an object that follows cqueues' polling
-- protocol (`:pollfd()`, `:events()`, `:timeout()`) for hosts that poll the
-- engine themselves. Lua 5.1-5.4.
-- @module koophone.sched.cqueues
local cqueues = require "cqueues"

local M = {}

--- The longest single poll while requests are in flight, seconds.
M.max_step = 0.01
--- The longest single poll when nothing is in flight.
M.idle_step = 0.05

local unpack = table.unpack or unpack

local function in_controller()
  local cq, yieldable = cqueues.running()
  return cq ~= nil and yieldable ~= false
end

-- one fd watched by cqueues
local Fd = {}
Fd.__index = Fd
function Fd:pollfd() return self.fd end
function Fd:events() return self.ev end
function Fd.timeout() return nil end

-- polls the engine's sockets once (up to `cap` seconds)
local function poll_once(engine, cap)
  local objs, n = {}, 0
  local both = require("koophone.sched").descriptors(engine)
  for fd, ev in pairs(both) do
    n = n + 1
    objs[n] = setmetatable({ fd = fd, ev = ev }, Fd)
  end
  local t = engine:timeout()
  local s = cap
  if t >= 0 and t / 1000 < s then s = t / 1000 end
  n = n + 1
  objs[n] = s
  cqueues.poll(unpack(objs, 1, n))
  -- cqueues keeps a polled descriptor in its own set; the engine may close
  -- it (client:close()) before we poll again, and cqueues would then fail
  -- on it ("Bad file descriptor"): let it go now
  for fd in pairs(both) do cqueues.cancel(fd) end
end

require("koophone.sched").host_waiter(M, in_controller, poll_once)

--- The engine as a cqueues pollable: ready when curl's timer is due or one
-- of its sockets (the first one reported) is ready; call `engine:perform()`
-- after each wake-up. Coarse (curl has many sockets): its timeout is capped
-- at `max_step`.
function M.pollable(engine)
  local p = {}
  function p.pollfd()
    local one = engine.fd and engine:fd()
    if one then return one end
    local r, w = engine:fds()
    return r[1] or w[1] or -1
  end
  function p.events()
    if engine.fd and engine:fd() then return "r" end
    local r = engine:fds()
    return r[1] and "r" or "w"
  end
  function p.timeout()
    local t = engine:timeout()
    if t < 0 or t / 1000 > M.max_step then return M.max_step end
    return t / 1000
  end
  return p
end

--- Makes every koophone wait outside koophone's own coroutines use cqueues.
function M.install()
  require("koophone.sched").set_waiter(M)
  return M
end

return M
