--- luv (libuv): koophone waits that yield to the uv loop.
--
--     local uv = require "luv"
--     local kuv = require("koophone.sched.luv").install()
--     kuv.spawn(function() local report = batch.run(client, "echo hi", ids) end)
--     -- ... other uv timers, sockets, processes ...
--     kuv.run()            -- uv.run(), then raises if a spawned function raised
--
-- Inside a coroutine started with `spawn`, a wait watches curl's sockets
-- (`engine:fds()`) with uv poll handles and curl's timer
-- (`engine:timeout()`, capped at `max_step`) with a uv timer, yields, and
-- is resumed by whichever fires first; the handles are closed before
-- `engine:perform()` runs, so curl may close or reuse its sockets freely.
-- Anywhere else waits block in `engine:wait()` as usual. Lua 5.1-5.4.
-- @module koophone.sched.luv
local uv = require "luv"

local M = {}

--- The longest single wait while requests are in flight, seconds.
M.max_step = 0.01
--- The longest single wait when nothing is in flight.
M.idle_step = 0.05

local ours = setmetatable({}, { __mode = "k" })
local errors = {}

local function ours_running()
  local co = coroutine.running()
  return co ~= nil and ours[co] == true
end

local function resume(co, ...)
  local ok, err = coroutine.resume(co, ...)
  if not ok then errors[#errors + 1] = debug.traceback(co, tostring(err)) end
  if coroutine.status(co) == "dead" then ours[co] = nil end
end

-- one wait: until a socket is ready, curl's timer is due, or `cap` seconds
local function wait_once(engine, cap)
  local co = coroutine.running()
  local handles, n, woke = {}, 0, false
  local function wake()
    if woke then return end
    woke = true
    for i = 1, n do
      if not handles[i]:is_closing() then handles[i]:close() end
    end
    resume(co)
  end
  for fd, e in pairs(require("koophone.sched").descriptors(engine)) do
    local p = uv.new_socket_poll(fd)
    if p then
      n = n + 1
      handles[n] = p
      p:start(e, wake)
    end
  end
  local s = cap
  local t = engine:timeout()
  if t >= 0 and t / 1000 < s then s = t / 1000 end
  local timer = uv.new_timer()
  n = n + 1
  handles[n] = timer
  timer:start(math.floor(s * 1000 + 0.5), 0, wake)
  coroutine.yield()
end

require("koophone.sched").host_waiter(M, ours_running, wait_once)

--- Starts `fn(...)` in a coroutine whose koophone waits yield to the uv
-- loop; it runs at once, up to its first wait.
-- @return the coroutine
function M.spawn(fn, ...)
  local co = coroutine.create(fn)
  ours[co] = true
  resume(co, ...)
  return co
end

--- Runs the uv loop (`uv.run(mode)`), then raises the errors of spawned
-- coroutines, if any.
function M.run(mode)
  local res = uv.run(mode)
  if #errors > 0 then
    local msg = table.concat(errors, "\n")
    errors = {}
    error(msg, 0)
  end
  return res
end

--- Makes every koophone wait outside koophone's own coroutines use luv.
function M.install()
  require("koophone.sched").set_waiter(M)
  return M
end

return M
