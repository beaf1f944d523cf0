--- The loop: the one place that drives koophone's engines and wakes whoever
-- waits.
--
-- Every finished transfer is reported once, by `engine:perform()`, and
-- this module is its only caller (`loop.drive`). Whoever waits on a request
-- leaves a *token* here (`loop.watch`); when the request's transfer ends,
-- exactly that token is woken: a coroutine of a `Loop` is put back on its
-- ready list, an OpenResty handler's semaphore is posted, a cqueues
-- condition is signalled. Nobody polls a request to see whether it is done.
--
-- A `Loop` runs coroutines (`loop:spawn`), and its waits yield to it:
--
--     local loop = require("koophone.loop").new()
--     loop:spawn(function() ... client:sync_command(...) ... end)
--     loop:run()          -- a script: sleeps in the engine's poll between events
--     -- or, in a game's frame loop, never blocking:
--     while loop:step() > 0 do draw_frame() end
--
-- `koophone.spawn`/`koophone.run` use the default loop (`loop.default()`).
-- Host adapters (`koophone.sched.ngx`, `.cqueues`, `.luv`) run one driver
-- per host that waits on the engines' descriptors and timeouts and calls
-- `loop.drive_all()`; see `koophone.sched`.
-- @module koophone.loop
local core = require "koophone.core"

local M = {}

local now = core.now
local unpack = table.unpack or unpack

--- The marker that a loop's coroutine yields with, so that the loop can
-- tell koophone's waits from a host's own `coroutine.yield`s.
M.WAIT = setmetatable({}, { __tostring = function() return "koophone.loop.WAIT" end })
local WAIT = M.WAIT

-- ------------------------------------------------------------ tokens
-- A token is a table with a `wake(token)` function; `fired` is set by the
-- first wake-up, so a token woken by both its request and its deadline
-- acts once.

local function fire(token)
  if token.fired then return end
  token.fired = true
  token.wake(token)
end

local function fire_all(t)
  if t.wake then return fire(t) end
  for i = 1, #t do fire(t[i]) end
end

-- engine -> { [request] = token | {token, ...} }: who waits on what. Weak
-- both ways: a client dropped without close() takes its engine with it,
-- and a request nobody refers to any more has nobody left to wake.
local watched = setmetatable({}, { __mode = "k" })

--- Leaves `token` to be woken when `req` (of `engine`) finishes, or when
-- `engine` is closed. Several tokens may wait on one request: each is woken.
-- @param engine
-- @param req a request of `engine`, not done yet
-- @tparam table token `{wake = function(token) ... end}`
function M.watch(engine, req, token)
  local w = watched[engine]
  if not w then
    w = setmetatable({}, { __mode = "k" })
    watched[engine] = w
  end
  local t = w[req]
  if t == nil then w[req] = token
  elseif t.wake then w[req] = { t, token }
  else t[#t + 1] = token end
  if M.on_watch then M.on_watch(engine) end
end

--- Called with the engine after every `watch` when set: a host driver's
-- hook (OpenResty's hands the engine to its waker thread, and wakes a
-- driver whose wait outlasts the new transfer's curl timer).
M.on_watch = nil

--- Advances `engine` without blocking — the only call of
-- `engine:perform()` in koophone — and wakes the tokens of the requests
-- it finished. A closed engine wakes every token it held and is forgotten.
-- @param engine
-- @treturn ?integer transfers still running (nil: the engine is closed)
function M.drive(engine)
  local ok, running, finished = pcall(engine.perform, engine)
  local w = watched[engine]
  if not ok then
    watched[engine] = nil
    if w then
      for _, t in pairs(w) do fire_all(t) end
    end
    if not tostring(running):find("is closed", 1, true) then error(running, 0) end
    return nil
  end
  if finished and w then
    for i = 1, #finished do
      local req = finished[i]
      local t = w[req]
      if t then
        w[req] = nil
        fire_all(t)
      end
    end
  end
  return running
end

--- Drives every engine someone waits on (for host drivers).
-- @treturn integer transfers running in all of them
function M.drive_all()
  local running = 0
  for engine in pairs(watched) do
    running = running + (M.drive(engine) or 0)
  end
  return running
end

--- The engines someone waits on (for host drivers that watch their
-- descriptors).
-- @treturn table a list of engines
function M.engines()
  local out = {}
  for engine, w in pairs(watched) do
    if next(w) ~= nil then out[#out + 1] = engine end
  end
  return out
end

--- Milliseconds until the earliest curl timer of the engines someone
-- waits on is due (nil: none is set).
-- @treturn ?number
function M.engines_timeout()
  local best
  for engine, w in pairs(watched) do
    if next(w) ~= nil then
      local ok, t = pcall(engine.timeout, engine)
      if ok and t >= 0 and (not best or t < best) then best = t end
    end
  end
  return best
end

-- A private engine with nothing to do, to sleep in without any other
-- engine (every engine closed, a coroutine still sleeps): its poll, no
-- busy loop.
local idle_engine
--- That idle engine (for hosts that wait on an engine's descriptor).
-- @return engine
function M.idle_engine()
  idle_engine = idle_engine or core.engine()
  return idle_engine
end
local function idle_wait(ms) M.idle_engine():wait(ms) end

-- ------------------------------------------------ waits outside any loop

--- Blocks until `req` is done or `deadline` (a `now()` time) has passed,
-- sleeping in the engine's poll: what a plain script's waits do.
-- @param engine
-- @param req
-- @tparam[opt] number deadline
function M.block(engine, req, deadline)
  while true do
    local alive = M.drive(engine)
    if req:done() then return end
    local ms = 1000
    if deadline then
      local left = deadline - now()
      if left <= 0 then return end
      if left * 1000 < ms then ms = left * 1000 end
    end
    if alive then engine:wait(ms) else idle_wait(ms) end
  end
end

--- Blocks for `seconds` while `engine` keeps every transfer moving.
-- @param engine
-- @tparam number seconds
function M.block_sleep(engine, seconds)
  local deadline = now() + seconds
  while true do
    local alive = M.drive(engine)
    local left = deadline - now()
    if left <= 0 then return end
    if alive then engine:wait(left * 1000) else idle_wait(left * 1000) end
  end
end

-- ---------------------------------------------------------------- timers
-- A binary min-heap of {at, token}.
local function heap_push(h, at, token)
  local n = #h + 1
  h[n] = { at, token }
  while n > 1 do
    local p = (n - n % 2) / 2
    if h[p][1] <= h[n][1] then break end
    h[p], h[n] = h[n], h[p]
    n = p
  end
end

local function heap_pop(h)
  local top, n = h[1], #h
  h[1] = h[n]
  h[n] = nil
  n = n - 1
  local i = 1
  while true do
    local l, r, m = 2 * i, 2 * i + 1, i
    if l <= n and h[l][1] < h[m][1] then m = l end
    if r <= n and h[r][1] < h[m][1] then m = r end
    if m == i then break end
    h[i], h[m] = h[m], h[i]
    i = m
  end
  return top
end

-- ------------------------------------------------------------------ Loop

local Loop = {}
Loop.__index = Loop

-- coroutine -> the Loop that runs it
local loop_of = setmetatable({}, { __mode = "k" })

--- A new loop, with no coroutines.
-- @treturn Loop
function M.new()
  return setmetatable({ ready = {}, spare = {}, timers = {}, count = 0, errors = {} }, Loop)
end

local default_loop
--- The default loop (the one `koophone.spawn` and `koophone.run` use).
-- @treturn Loop
function M.default()
  default_loop = default_loop or M.new()
  return default_loop
end

--- Drops the default loop (with any coroutine left in it): the next
-- `default()` is a new one.
function M.forget_default() default_loop = nil end

--- The loop running the current coroutine, if it is a loop's.
-- @treturn ?Loop
function M.current()
  local co = coroutine.running()
  return co and loop_of[co]
end

--- Runs many coroutines in one thread over koophone's engines.
-- @type Loop

-- (`on_ready`, if set, tells a host that steps this loop itself that
-- there is something to step: OpenResty's adapter rings the handler)
local function wake_coroutine(token)
  local l = token.loop
  l.ready[#l.ready + 1] = token.co
  if l.on_ready then l.on_ready() end
end

--- Adds a coroutine running `fn(...)`; it starts at the next `step()` or `run()`.
-- @tparam function fn
-- @return the coroutine
function Loop:spawn(fn, ...)
  local args = { n = select("#", ...), ... }
  local co = coroutine.create(function() return fn(unpack(args, 1, args.n)) end)
  loop_of[co] = self
  self.ready[#self.ready + 1] = co
  self.count = self.count + 1
  return co
end

-- What a coroutine yielded: a wait to set up, or a host's own yield.
function Loop:_resume(co)
  local ok, marker, kind, a, b, c = coroutine.resume(co)
  if not ok then
    self.count = self.count - 1
    self.errors[#self.errors + 1] = debug.traceback(co, tostring(marker))
    return
  end
  if coroutine.status(co) == "dead" then
    self.count = self.count - 1
    return
  end
  if marker ~= WAIT then
    -- a plain coroutine.yield from user code: let the others run first
    self.ready[#self.ready + 1] = co
    return
  end
  local token = { co = co, loop = self, wake = wake_coroutine }
  if kind == "req" then -- a = request, b = engine, c = deadline
    if a:done() then return wake_coroutine(token) end
    M.watch(b, a, token)
    if c then heap_push(self.timers, c, token) end
  elseif kind == "until" then -- a = a now() time
    heap_push(self.timers, a, token)
  else -- "park": a(token) leaves the token where it will be woken; b = deadline
    a(token)
    if b then heap_push(self.timers, b, token) end
  end
end

function Loop:_resume_ready()
  local ready = self.ready
  if #ready == 0 then return end
  self.ready, self.spare = self.spare, ready
  for i = 1, #ready do
    local co = ready[i]
    ready[i] = nil
    self:_resume(co)
  end
end

function Loop:_raise()
  if #self.errors > 0 then
    local msg = table.concat(self.errors, "\n")
    self.errors = {}
    error(msg, 0)
  end
end

--- One pass, never blocking: resumes the coroutines that can go on, drives
-- the engines once (waking those whose requests finished), fires the due
-- timers, and resumes what that woke. Raises if a coroutine raised.
-- @treturn integer coroutines still alive
function Loop:step()
  self:_resume_ready()
  M.drive_all()
  local t, timers = now(), self.timers
  while timers[1] and timers[1][1] <= t do fire(heap_pop(timers)[2]) end
  self:_resume_ready()
  self:_raise()
  return self.count
end

--- Seconds until this loop needs a step again (0: now; nil: only an
-- engine event can wake it).
-- @treturn ?number
function Loop:next_wake()
  if #self.ready > 0 then return 0 end
  local timers = self.timers
  -- timers of tokens already woken are dropped as they come due
  while timers[1] and timers[1][2].fired do heap_pop(timers) end
  if timers[1] then return math.max(0, timers[1][1] - now()) end
  return nil
end

-- Sleeps up to `ms` in the poll of the engines someone waits on.
local function sleep_in_engines(ms)
  local list = M.engines()
  if #list == 0 then return idle_wait(ms) end
  local t = M.engines_timeout()
  if t and t < ms then ms = t end
  -- one engine: its poll covers every socket; several: take turns briefly
  if #list > 1 and ms > 5 then ms = 5 end
  local ok = pcall(list[1].wait, list[1], ms)
  if not ok then idle_wait(0) end -- closed meanwhile: the next step forgets it
end

--- Runs the coroutines to their end, sleeping in the engines' poll
-- between events (no busy loop). Raises if a coroutine raised.
-- @tparam[opt] number timeout give up after this many seconds
-- @treturn boolean true when every coroutine finished, false on timeout
function Loop:run(timeout)
  if self.running then error("koophone loop: run() called from inside the running loop", 2) end
  local deadline = timeout and now() + timeout
  self.running = true
  while true do
    local ok, alive = pcall(self.step, self)
    if not ok then
      self.running = false
      error(alive, 0)
    end
    if alive == 0 then break end
    if #self.ready == 0 then
      local t = now()
      if deadline and t >= deadline then
        self.running = false
        return false
      end
      local wake = self:next_wake()
      local ms = wake and wake * 1000 or 1000
      if ms > 1000 then ms = 1000 end
      if deadline and (deadline - t) * 1000 < ms then ms = (deadline - t) * 1000 end
      sleep_in_engines(ms)
    end
  end
  self.running = false
  return true
end

-- ------------------------------------------------- waits inside a loop

--- Inside a loop's coroutine: yields until `req` is done or `deadline`.
function M.yield_request(engine, req, deadline)
  coroutine.yield(WAIT, "req", req, engine, deadline)
end

--- Sleeps inside a loop of at least `10 * slack` seconds end on a grid of
-- `slack` seconds (their end rounded up to it): tasks that poll every
-- 0.1 s or more wake in one step, so their queries leave together and
-- their replies are read together, instead of one wake-up each. Shorter
-- sleeps (rate limits, backoff) stay exact. 0 turns it off.
M.slack = 0.01

--- Inside a loop's coroutine: yields until the `now()` time `at` (see
-- `slack`).
function M.yield_until(at)
  local g = M.slack
  if g > 0 and at - now() > 9.9 * g then at = math.ceil(at / g) * g end
  coroutine.yield(WAIT, "until", at)
end

--- Inside a loop's coroutine: yields until `place(token)`'s token is
-- woken (by whoever it was handed to), or `deadline`.
-- @tparam function place
-- @tparam[opt] number deadline
function M.yield_park(place, deadline)
  coroutine.yield(WAIT, "park", place, deadline)
end

-- ------------------------------------------------------- semaphore

local Semaphore = {}
Semaphore.__index = Semaphore

--- A counting semaphore for a loop's coroutines (batch's request slots).
-- @tparam integer permits
-- @treturn Semaphore
function M.semaphore(permits)
  return setmetatable({ permits = permits, queue = {}, head = 1, tail = 0 }, Semaphore)
end

--- Takes a permit; inside a loop's coroutine, parks until one is free.
-- @type Semaphore
function Semaphore:acquire()
  if self.permits > 0 then
    self.permits = self.permits - 1
    return
  end
  if not M.current() then error("koophone semaphore: acquire() would block outside a loop", 2) end
  -- parked in arrival order; the releaser hands its permit over
  M.yield_park(function(t)
    self.tail = self.tail + 1
    self.queue[self.tail] = t
  end)
end

--- Gives a permit back: to the first parked coroutine, if any.
function Semaphore:release()
  local q = self.queue
  while self.head <= self.tail do
    local token = q[self.head]
    q[self.head] = nil
    self.head = self.head + 1
    if not token.fired then -- (a token whose deadline came first is skipped)
      fire(token)
      return
    end
  end
  self.head, self.tail = 1, 0
  self.permits = self.permits + 1
end

--- The Lua side of a condition: `wait()` parks the current loop coroutine
-- until `signal()`.
-- @treturn table `{wait=, signal=}`
function M.latch()
  local waiting = {}
  local open = false
  local latch = {}
  function latch.wait()
    if open then return end
    M.yield_park(function(t) waiting[#waiting + 1] = t end)
  end
  function latch.signal()
    open = true
    for i = 1, #waiting do fire(waiting[i]) end
    waiting = {}
  end
  function latch.is_open() return open end
  return latch
end

return M
