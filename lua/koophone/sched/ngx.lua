--- OpenResty / ngx_lua: koophone waits that never block the nginx worker.
--
-- koophone's transfers run on libcurl's own sockets (not cosockets), so
-- nginx cannot watch them for us. Instead each worker runs one *driver*:
-- an `ngx.timer` that drives the engines (`koophone.loop.drive_all`) and
-- then waits for the next thing to do. On Linux it waits on a *waker*
-- (`core.waker`): a thread of koophone's that watches the engines'
-- descriptors and sends one byte down a unix socket, which the driver
-- reads through a cosocket, when a reply arrives. So the driver wakes
-- when there is work (or when curl's own timer is due), and not
-- otherwise. Where there is no waker (not Linux, no writable `$TMPDIR` or
-- /tmp, `use_waker = false`) it steps instead: it sleeps on the engines'
-- timeout — at most `max_step` while transfers are in flight, `idle_step`
-- otherwise.
--
-- Waiting handlers do not poll: each parks on an `ngx.semaphore` that
-- the driver posts when its request finishes, so a handler wakes once per
-- request, and a plain `sched.sleep` is one `ngx.sleep`. A batch's loop
-- is stepped by its own handler, rung when the driver wakes one of its
-- coroutines (ngx_lua resumes a coroutine only in the request that made
-- it). The driver stops when nobody waits and starts again at the next
-- wait.
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

--- Wait on a waker thread (Linux) rather than step: see above. Read at
-- each turn of the driver; false makes the driver step.
M.use_waker = true

--- With a waker: a reply is held this long, so that the driver reads the
-- rest of its burst (the replies to a batch's status queries, sent
-- together) in the same turn rather than one turn each, when another
-- transfer was in flight with it or it comes within 10 linger of the
-- driver's last wake-up. A lone request's reply is never held. Read when
-- the worker's waker is made.
M.linger = 0.003

--- Wake-ups counted since the worker started (or since `reset_stats`):
-- `driver` (the driver's sleeps that ended), `handlers` (parked
-- handlers and handler sleeps that ended), `retimes` (new waits that
-- moved the waker's timer earlier) and `starts` (the driver's timers
-- started: it stops when nothing is in flight and nobody waits). They say
-- what waiting costs. `waker`
-- is true while the driver waits on a waker, and `waker_error` says why
-- it does not, if it tried and could not.
M.stats = { driver = 0, handlers = 0, retimes = 0, starts = 0, waker = false, waker_error = nil }

--- Sets the wake-up counters back to zero.
function M.reset_stats() M.stats.driver, M.stats.handlers, M.stats.retimes, M.stats.starts = 0, 0, 0, 0 end

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
-- wake_at: when the driver's current wait ends (now() time); sock: its
-- cosocket to the waker while it waits on one
local driver = { running = false, bell = nil, sleeping = false, wake_at = 0, sock = nil, hold = false }

-- The handlers parked now, as `{sema, posted}` (weak keys: see waiting()).
local parked = setmetatable({}, { __mode = "k" })

-- Whether a parked handler is still alive: blocked on its semaphore
-- (`count()` < 0), or posted and not yet resumed (`posted`, and the post
-- not yet taken: `count()` 0; a semaphore is never posted twice). A
-- handler that ngx_lua ended while it waited (a client that hung up, with
-- lua_check_client_abort on; ngx.exit in a sibling thread) never leaves
-- its wait, so its entry stays in `parked`; but ngx_lua took it off its
-- semaphore's queue, so its `count()` is 0 (or 1 once posted, with nobody
-- to take it), and the entry goes with the next collection. (The last
-- handler to leave rings the driver, unpark(); while a killed one's entry
-- is there, none is the last, and the driver, asleep for at most 1 s
-- while nothing is in flight, stops at its next turn.)
local function waiting()
  for p in pairs(parked) do
    local c = p.sema:count()
    if c < 0 or (c == 0 and p.posted) then return true end
  end
  return false
end

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

-- ------------------------------------------------------------ the waker
-- One per worker, made at the driver's first start; the engines someone
-- waits on are added to it as they come (loop.on_watch).
local waker
local added = setmetatable({}, { __mode = "k" }) -- engines the waker watches

local function no_waker(why)
  M.stats.waker, M.stats.waker_error = false, why
  if waker then pcall(waker.close, waker) end
  waker = nil
  rawget(_G, "ngx").log(rawget(_G, "ngx").WARN, "koophone: the driver steps (no waker: ", why, ")")
end

local function watch_engine(engine)
  if waker and not added[engine] then
    added[engine] = true
    pcall(waker.add, waker, engine) -- a closed engine: nothing to watch
  end
end

local function get_waker()
  if not M.use_waker then return nil end
  if waker or M.stats.waker_error then return waker end
  local core = require "koophone.core"
  if not core.waker then
    M.stats.waker_error = "core.waker: Linux only"
    return nil
  end
  local w, err = core.waker { linger_ms = math.floor(M.linger * 1000 + 0.5) }
  if not w then no_waker(err) return nil end
  waker = w
  for _, engine in ipairs(loop.engines()) do watch_engine(engine) end
  return waker
end

-- a new wait: the waker must watch its engine, and its timer must be due
-- no later than curl's timer for the new transfer (the thread takes the
-- earlier time; the driver sleeps on)
loop.on_watch = function(engine)
  if not waker then return end
  watch_engine(engine)
  if driver.sock and driver.sleeping then
    local ok, t = pcall(engine.timeout, engine)
    local due = ok and t >= 0 and now() + t / 1000
    if due and due < driver.wake_at then
      driver.wake_at = due
      M.stats.retimes = M.stats.retimes + 1
      waker:retime(t)
    end
    -- a second transfer in flight: their replies may come as a burst
    if not driver.hold and ok and engine:inflight() > 1 then
      driver.hold = true
      waker:hold()
    end
  end
end

-- the cosocket to the waker, or nil (then the driver steps)
local function connect_waker()
  local w = get_waker()
  if not w then return nil end
  local sock = rawget(_G, "ngx").socket.tcp()
  local ok, err = sock:connect("unix:" .. w:path())
  if not ok then no_waker("cannot connect to " .. w:path() .. ": " .. tostring(err)) return nil end
  return sock
end

-- Arms the waker with curl's timer and waits for its byte: true, or nil
-- when the socket failed (then the driver steps). The read has no
-- timeout of its own (the waker keeps the timer), so nginx logs nothing.
local function wait_on_waker(sock, running)
  -- no curl timer, or a later one: still a byte before the read's own
  -- timeout (the driver then just arms the thread again)
  local t, cap = loop.engines_timeout(), (FOREVER - 60) * 1000
  -- nothing in flight: look at least once a second whether nginx exits
  if running == 0 then cap = 1000 end
  if not t or t > cap then t = cap end
  local ms = math.ceil(t)
  driver.wake_at = now() + ms / 1000
  -- armed by a call, not a message on the socket, so the thread is not
  -- woken to read it (on the worker's CPU, that would delay the worker's
  -- next request). With several transfers in flight a reply may be the
  -- first of a burst: it is held `linger` for the rest.
  driver.hold = running > 1
  waker:arm(ms, driver.hold)
  sock:settimeout(FOREVER * 1000)
  local byte, err = sock:receive(1)
  if byte then return true end
  no_waker("the waker's socket: " .. tostring(err))
  return nil
end

-- nginx is quitting or reloading (a graceful exit waits for this worker)
local function exiting()
  local worker = rawget(_G, "ngx").worker
  return worker ~= nil and worker.exiting ~= nil and worker.exiting()
end

-- the driver's cosocket to the waker, or nil: it steps
local function use_socket(sock)
  driver.sock = sock
  M.stats.waker = sock ~= nil
  return sock
end

local function run_driver(premature)
  if premature then driver.running = false return end
  local sock = use_socket(connect_waker())
  while true do
    local ok, running = pcall(loop.drive_all)
    if not ok then
      rawget(_G, "ngx").log(rawget(_G, "ngx").ERR, "koophone driver: ", running)
      running = 0
    end
    -- stop when nothing is in flight and no handler waits (see waiting());
    -- when nginx exits, once nothing is in flight
    if running == 0 and (not waiting() or exiting()) then break end
    if (sock ~= nil) ~= (M.use_waker and not M.stats.waker_error) then -- switched meanwhile
      if sock then sock:close() sock = use_socket(nil) else sock = use_socket(connect_waker()) end
    end
    M.stats.driver = M.stats.driver + 1
    driver.sleeping = true
    if sock and not wait_on_waker(sock, running) then
      sock:close()
      sock = use_socket(nil)
    elseif not sock then
      driver.bell:wait(pause(running)) -- a new wait rings it: its reply is picked up at once
    end
    driver.sleeping = false
  end
  if sock then sock:close() end -- the waker goes back to accepting
  driver.sock = nil
  driver.running = false
end

-- starts the driver, or wakes it from an idle sleep
local function kick()
  if driver.running then
    -- (a driver waiting on a waker is rung by loop.on_watch if need be)
    if not driver.sock and driver.sleeping and driver.bell:count() <= 0 then driver.bell:post(1) end
    return
  end
  driver.bell = driver.bell or new_semaphore()
  driver.running = true
  M.stats.starts = M.stats.starts + 1
  local ok, err = rawget(_G, "ngx").timer.at(0, run_driver)
  if not ok then
    driver.running = false
    error("koophone: cannot start the OpenResty driver (ngx.timer.at: " .. tostring(err) .. ")", 0)
  end
end

-- ------------------------------------------------------------- waiting

-- A waiter leaves. The last one rings a driver asleep on its waker, so
-- that it stops (if nothing is in flight) instead of sitting on the
-- socket until a reply or its timer: a read in progress is a timer that
-- keeps nginx's worker alive through a graceful quit or reload.
local function unpark(p)
  parked[p] = nil
  if next(parked) == nil and driver.sock and driver.sleeping and waker then waker:ring() end
end

local function park(p) parked[p] = true end

local function post(p)
  p.posted = true
  p.sema:post(1)
end

-- p's semaphore, up to `seconds` (a post taken clears `posted`)
local function wait(p, seconds)
  if p.sema:wait(seconds) then p.posted = false end
  M.stats.handlers = M.stats.handlers + 1
end

--- Waits until `req:done()` (or `deadline`), parked on a semaphore that
-- the worker's driver posts.
function M.await(engine, req, deadline)
  if not can_yield() then return loop.block(engine, req, deadline) end
  if req:done() then return end
  local token = { sema = new_semaphore(), wake = post }
  loop.watch(engine, req, token)
  park(token)
  local ok, err = pcall(kick)
  while ok and not req:done() do
    local left = deadline and deadline - now() or FOREVER
    if left <= 0 then break end
    if not driver.running then ok, err = pcall(kick) end -- stopped meanwhile (see waiting())
    if ok then wait(token, left) end
  end
  token.fired = true -- a late wake-up finds nobody
  unpark(token)
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
  local bell = { sema = new_semaphore() }
  l.on_ready = function() if not bell.posted then post(bell) end end -- one post at a time
  park(bell)
  local ok, err = pcall(function()
    kick()
    while l:step() > 0 do
      local wake = l:next_wake()
      if not wake or wake > 0 then
        if not driver.running then kick() end -- stopped meanwhile (see waiting(); nginx exits)
        wait(bell, wake and (math.ceil(wake * 1000) + 1) / 1000 or FOREVER)
      end
    end
  end)
  l.on_ready = nil
  unpark(bell)
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
