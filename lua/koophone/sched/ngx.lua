--- OpenResty / ngx_lua: koophone waits that never block the nginx worker.
--
-- koophone's transfers run on libcurl's own sockets (not cosockets), so
-- nginx cannot wake us when they are ready. Instead, every wait calls the
-- non-blocking `engine:perform()` and then `ngx.sleep`s a little (1 ms at
-- first, growing to `max_step` while requests are in flight, never past
-- `engine:timeout()`), which hands the worker back to nginx between polls.
--
--     -- in init_worker_by_lua_block (or lazily, once per worker):
--     require("koophone.sched.ngx").install()
--
-- `koophone.sched` installs this adapter by itself when it is first
-- required inside nginx (a global `ngx` with `ngx.sleep`), so `install()`
-- is only needed after a `sched.set_waiter(nil)`.
--
-- In phases where ngx_lua cannot yield (init_by_lua, init_worker_by_lua,
-- set_by_lua, header/body filters, log) waits fall back to blocking in
-- `engine:wait()`; keep koophone calls in content/access/rewrite handlers
-- and `ngx.timer.at` callbacks. Valid Lua 5.1 / LuaJIT.
-- @module koophone.sched.ngx
local M = {}

--- The first sleep of a wait, seconds.
M.min_step = 0.001
--- The longest sleep while requests are in flight, seconds.
M.max_step = 0.004
--- The longest sleep when nothing is in flight (a plain `sched.sleep`).
M.idle_step = 0.05

-- phases in which ngx.sleep may be called (it yields the request's coroutine)
local YIELDABLE = {
  rewrite = true, server_rewrite = true, access = true, content = true, timer = true,
  ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true, preread = true,
  balancer = false, -- cannot yield
}

local function can_yield()
  local ngx = rawget(_G, "ngx")
  if type(ngx) ~= "table" or type(ngx.sleep) ~= "function" then return false end
  if type(ngx.get_phase) ~= "function" then return true end
  local ok, phase = pcall(ngx.get_phase)
  return ok and YIELDABLE[phase] == true
end
M.can_yield = can_yield

local function now()
  -- ngx.now() is cached per event-loop iteration; use koophone's monotonic clock
  return require("koophone.core").now()
end

-- the next pause: `step`, capped by curl's own timer and by the time left
-- (at least 1 ms: nginx timers have millisecond resolution, and Debian's
-- nginx lacks the "delayed events" patch that makes ngx.sleep(0) cheap)
local function pause(engine, step, left)
  local s = step
  local t = engine:timeout()
  if t >= 0 and t / 1000 < s then s = t / 1000 end
  if left and left < s then s = left end
  if s < 0.001 then s = 0.001 end
  rawget(_G, "ngx").sleep(s)
end

--- Waits until `req:done()`, polling with `ngx.sleep` in between.
function M.await(engine, req, deadline)
  if not can_yield() then
    return require("koophone.sched").blocking.await(engine, req, deadline)
  end
  local step = M.min_step
  while true do
    engine:perform()
    if req:done() then return end
    local left = deadline and deadline - now()
    if left and left <= 0 then return end
    pause(engine, step, left)
    step = step * 2
    if step > M.max_step then step = M.max_step end
  end
end

--- Waits `seconds` while the engine keeps every transfer moving.
function M.sleep(engine, seconds)
  local deadline = now() + seconds
  if not can_yield() then
    return require("koophone.sched").blocking.sleep(engine, seconds)
  end
  local step = M.min_step
  while true do
    local running = engine:perform()
    local left = deadline - now()
    if left <= 0 then return end
    if running > 0 then
      pause(engine, step, left)
      step = step * 2
      if step > M.max_step then step = M.max_step end
    else
      -- nothing in flight: nothing to drive; sleep in larger slices (a
      -- request submitted meanwhile by this worker is driven by its waiter)
      pause(engine, M.idle_step, left)
      step = M.min_step
    end
  end
end

--- Makes every koophone wait outside managed coroutines use this adapter.
-- @treturn table the adapter
function M.install()
  require("koophone.sched").set_waiter(M)
  return M
end

--- Restores blocking waits (for comparisons; never do this in production).
function M.uninstall()
  require("koophone.sched").set_waiter(nil)
end

return M
