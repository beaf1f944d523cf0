--- OpenResty / ngx_lua: koophone waits that never block the nginx worker.
--
-- koophone's transfers run on libcurl's own sockets (not cosockets), so
-- nginx cannot watch them for us. Instead each worker runs one *driver*:
-- an `ngx.timer` that drives the engines (`koophone.loop.drive_all`) and
-- sleeps on the engines' timeout — at most `max_step` while transfers are in flight,
-- `idle_step` otherwise — then again. Waiting handlers do not poll: each
-- parks on an `ngx.semaphore` that the driver posts when its request
-- finishes, so a handler wakes once per request, and a plain
-- `sched.sleep` is one `ngx.sleep`. A batch's loop is stepped by its own
-- handler, rung when the driver wakes one of its coroutines (ngx_lua
-- resumes a coroutine only in the request that made it). The driver stops when nobody waits
-- and starts again at the next wait.
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
-- the engine's poll; keep koophone calls in content/access/rewrite
-- handlers and `ngx.timer.at` callbacks. Valid Lua 5.1 / LuaJIT.
-- @module koophone.sched.ngx
local loop = require "koophone.loop"

local M = {}

--- The longest sleep of the driver while requests are in flight, seconds.
M.max_step = 0.004
--- The longest sleep of the driver when nothing is in flight.
M.idle_step = 0.05

--- Wake-ups counted since the worker started (or since `reset_stats`):
-- `driver` (the driver's sleeps that ended) and `handlers` (parked
-- handlers and handler sleeps that ended). They say what waiting costs.
M.stats = { driver = 0, handlers = 0 }

--- Sets the wake-up counters back to zero.
function M.reset_stats() M.stats.driver, M.stats.handlers = 0, 0 end

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

-- the longest a parked handler waits without a deadline (it wakes, sees
-- nothing, parks again)
local FOREVER = 3600

-- ------------------------------------------------------------ the driver
-- One per worker (module state is per worker: each nginx worker is its
-- own Lua VM).
local semaphore
local driver = { running = false, parked = 0, bell = nil, sleeping = false }

local function new_semaphore()
  semaphore = semaphore or require "ngx.semaphore"
  return assert(semaphore.new(0))
end

-- the driver's pause: curl's timer, or the step
local function pause(running)
  local s = running > 0 and M.max_step or M.idle_step
  local t = loop.engines_timeout()
  if t and t / 1000 < s then s = t / 1000 end
  -- nginx timers have millisecond resolution, and Debian's nginx lacks the
  -- "delayed events" patch that makes a 0 s sleep cheap
  if s < 0.001 then s = 0.001 end
  return s
end

local function run_driver(premature)
  if premature then driver.running = false return end
  while true do
    local ok, running = pcall(loop.drive_all)
    if not ok then
      rawget(_G, "ngx").log(rawget(_G, "ngx").ERR, "koophone driver: ", running)
      running = 0
    end
    if running == 0 and driver.parked == 0 then break end
    M.stats.driver = M.stats.driver + 1
    driver.sleeping = true
    driver.bell:wait(pause(running)) -- a new wait rings it: its reply is picked up at once
    driver.sleeping = false
  end
  driver.running = false
end

-- starts the driver, or wakes it from an idle sleep
local function kick()
  if driver.running then
    if driver.sleeping and driver.bell:count() <= 0 then driver.bell:post(1) end
    return
  end
  driver.bell = driver.bell or new_semaphore()
  driver.running = true
  local ok, err = rawget(_G, "ngx").timer.at(0, run_driver)
  if not ok then
    driver.running = false
    error("koophone: cannot start the OpenResty driver (ngx.timer.at: " .. tostring(err) .. ")", 0)
  end
end

-- ------------------------------------------------------------- waiting

local function post(token) token.sema:post(1) end

--- Waits until `req:done()` (or `deadline`), parked on a semaphore that
-- the worker's driver posts.
function M.await(engine, req, deadline)
  if not can_yield() then return loop.block(engine, req, deadline) end
  if req:done() then return end
  local token = { sema = new_semaphore(), wake = post }
  loop.watch(engine, req, token)
  driver.parked = driver.parked + 1
  local ok, err = pcall(kick)
  while ok and not req:done() do
    local left = deadline and deadline - now() or FOREVER
    if left <= 0 then break end
    token.sema:wait(left)
    M.stats.handlers = M.stats.handlers + 1
  end
  token.fired = true -- a late wake-up finds nobody
  driver.parked = driver.parked - 1
  if not ok then error(err, 0) end
end

--- Waits `seconds`: one `ngx.sleep` (the driver keeps every transfer
-- moving meanwhile).
function M.sleep(engine, seconds)
  if not can_yield() then return loop.block_sleep(engine, seconds) end
  rawget(_G, "ngx").sleep(seconds < 0.001 and 0.001 or seconds)
  M.stats.handlers = M.stats.handlers + 1
end

--- Runs the loop `l` (a batch's) to its end in the handler: the handler
-- steps it (ngx_lua resumes a coroutine only in the request that made
-- it) and parks between steps; the driver's wake-ups of the loop's
-- coroutines ring the handler.
function M.finish(l)
  if not can_yield() then return l:run() end
  local bell = new_semaphore()
  l.on_ready = function() if bell:count() <= 0 then bell:post(1) end end
  driver.parked = driver.parked + 1
  local ok, err = pcall(function()
    kick()
    while l:step() > 0 do
      local wake = l:next_wake()
      if not wake or wake > 0 then
        bell:wait(wake and math.max(wake, 0.001) or FOREVER)
        M.stats.handlers = M.stats.handlers + 1
      end
    end
  end)
  l.on_ready = nil
  driver.parked = driver.parked - 1
  if not ok then error(err, 0) end
  return true
end

--- Makes every koophone wait outside a loop's coroutines use this adapter.
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
