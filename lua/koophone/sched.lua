--- Scheduling: how koophone waits.
--
-- Library code never blocks directly; it calls `sched.await(engine, req)`
-- (until a request finishes) or `sched.sleep(engine, seconds)`. What that
-- means depends on where the code runs:
--
-- * inside a coroutine managed by a scheduler (`koophone.spawn` /
--   `koophone.run`, or a task's internal poller): it yields, and the manager
--   resumes it when the request is done or the time has come;
-- * anywhere else: it blocks in `engine:wait()` (curl_multi_poll), which
--   sleeps until a socket is ready — no busy loop — while every other
--   transfer of the engine goes on.
--
-- Hosts with their own loop (OpenResty, cqueues, luv) install a waiter with
-- `sched.set_waiter`.
-- @module koophone.sched
local core = require "koophone.core"

local M = {}

local now = core.now
M.now = now

--- The marker that a managed coroutine yields with, so that a manager can
-- tell koophone's waits from a host's own `coroutine.yield`s.
M.WAIT = setmetatable({}, { __tostring = function() return "koophone.sched.WAIT" end })
local WAIT = M.WAIT

-- coroutine -> true for coroutines whose resumer understands WAIT yields
local managed = setmetatable({}, { __mode = "k" })

--- Marks a coroutine as managed: its waits yield `WAIT, kind, arg, engine`
-- (kind "req" with the request, or "until" with a `now()` deadline).
-- @tparam thread co
function M.manage(co) managed[co] = true end

local function in_managed()
  local co = coroutine.running()
  return co ~= nil and managed[co] == true
end

-- The default waiter: block in the engine.
local blocking = {}

function blocking.await(engine, req, deadline)
  repeat
    engine:perform()
    if req:done() then return end
    local ms = 1000
    if deadline then
      local left = deadline - now()
      if left <= 0 then return end
      if left * 1000 < ms then ms = left * 1000 end
    end
    engine:wait(ms)
  until req:done()
end

function blocking.sleep(engine, seconds)
  local deadline = now() + seconds
  while true do
    engine:perform()
    local left = deadline - now()
    if left <= 0 then return end
    engine:wait(left * 1000)
  end
end

--- Fills `adapter.await` and `adapter.sleep` for a host that can wait for
-- a while and resume us (cqueues, luv): inside the host (`in_host()`), each
-- wait calls `engine:perform()` then `wait_once(engine, seconds)` — at most
-- `adapter.max_step` while transfers run, `adapter.idle_step` otherwise;
-- elsewhere it blocks in the engine.
-- @tparam table adapter gets `await` and `sleep`
-- @tparam function in_host true when the running code may yield to the host
-- @tparam function wait_once `(engine, seconds)`: let the host run that long
function M.host_waiter(adapter, in_host, wait_once)
  function adapter.await(engine, req, deadline)
    if not in_host() then return M.blocking.await(engine, req, deadline) end
    while true do
      engine:perform()
      if req:done() then return end
      local step = adapter.max_step
      if deadline then
        local left = deadline - now()
        if left <= 0 then return end
        if left < step then step = left end
      end
      wait_once(engine, step)
    end
  end
  function adapter.sleep(engine, seconds)
    if not in_host() then return M.blocking.sleep(engine, seconds) end
    local deadline = now() + seconds
    while true do
      local running = engine:perform()
      local left = deadline - now()
      if left <= 0 then return end
      local cap = running > 0 and adapter.max_step or adapter.idle_step
      wait_once(engine, left < cap and left or cap)
    end
  end
  return adapter
end

--- What a host loop watches for an engine: its one pollable descriptor
-- (the engine's epoll set) where it has one, else each socket curl watches.
-- @param engine
-- @treturn table `fd -> "r" | "w" | "rw"`
function M.descriptors(engine)
  local set = {}
  local one = engine.fd and engine:fd()
  if one then
    set[one] = "r"
  else
    local r, w = engine:fds()
    for _, fd in ipairs(w) do set[fd] = "w" end
    for _, fd in ipairs(r) do set[fd] = set[fd] and "rw" or "r" end
  end
  return set
end

--- The default waiter (block in `engine:wait`), for adapters to fall back on
-- where their host cannot yield.
M.blocking = blocking

local waiter = blocking

-- Inside OpenResty (a global `ngx` with `ngx.sleep`), wait with ngx.sleep
-- between non-blocking perform() calls: see koophone.sched.ngx.
do
  local ngx = rawget(_G, "ngx")
  if type(ngx) == "table" and type(ngx.sleep) == "function" and type(ngx.get_phase) == "function" then
    local ok, adapter = pcall(require, "koophone.sched.ngx")
    if ok then waiter = adapter end
  end
end

--- Replaces how code outside managed coroutines waits (e.g. with
-- `ngx.sleep` in OpenResty). `w` has `await(engine, req)` and
-- `sleep(engine, seconds)`; `nil` restores blocking waits.
-- @tparam[opt] table w
function M.set_waiter(w) waiter = w or blocking end

--- Returns once `req:done()`, or once `deadline` has passed. Never raises
-- for the request's own outcome; the caller checks `req:done()`.
-- @param engine the engine the request belongs to
-- @param req a request from `engine:submit`
-- @tparam[opt] number deadline a `now()` time to stop waiting at
function M.await(engine, req, deadline)
  if req:done() then return end
  if in_managed() then
    repeat coroutine.yield(WAIT, "req", req, engine, deadline)
    until req:done() or (deadline and now() >= deadline)
  else
    waiter.await(engine, req, deadline)
  end
end

--- Waits `seconds` while the engine keeps every transfer moving.
-- @param engine
-- @tparam number seconds
function M.sleep(engine, seconds)
  if seconds <= 0 then return end
  if in_managed() then
    local deadline = now() + seconds
    repeat coroutine.yield(WAIT, "until", deadline, engine) until now() >= deadline
  else
    waiter.sleep(engine, seconds)
  end
end

-- A binary min-heap of {at, token} for sleeping coroutines.
local function heap_push(h, at, token)
  local n = #h + 1
  h[n] = { at, token }
  while n > 1 do
    local p = math.floor(n / 2)
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

-- A scheduler (the Runner type, below).
local Runner = {}
Runner.__index = Runner

--- A new, empty scheduler.
-- @treturn Runner
function M.runner()
  return setmetatable({ ready = {}, by_req = {}, timers = {}, engines = {}, count = 0,
                        errors = {} }, Runner)
end

--- A scheduler: runs many coroutines in one thread over koophone's engines.
-- @type Runner

--- Adds a coroutine running `fn(...)`; it starts at the next `run()`.
-- @tparam function fn
-- @return the coroutine
function Runner:spawn(fn, ...)
  local args = table.pack and table.pack(...) or { n = select("#", ...), ... }
  local co = coroutine.create(function() return fn((table.unpack or unpack)(args, 1, args.n)) end)
  managed[co] = true
  self.ready[#self.ready + 1] = co
  self.count = self.count + 1
  return co
end

-- A wait of one coroutine: woken once, by whichever of its request or its
-- deadline comes first (the other finds it fired and is ignored).
function Runner:_wake(token)
  if token.fired then return end
  token.fired = true
  self.ready[#self.ready + 1] = token.co
end

function Runner:_resume(co)
  local ok, marker, kind, arg, engine, deadline = coroutine.resume(co)
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
  self.engines[engine] = true
  local token = { co = co }
  if kind == "req" then
    if arg:done() then self.ready[#self.ready + 1] = co return end
    -- several coroutines may wait on one request: each is woken
    local list = self.by_req[arg]
    if list then list[#list + 1] = token else self.by_req[arg] = { token } end
    if deadline then heap_push(self.timers, deadline, token) end
  else
    heap_push(self.timers, arg, token)
  end
end

function Runner:_finished(req)
  local list = self.by_req[req]
  if not list then return end
  self.by_req[req] = nil
  for i = 1, #list do self:_wake(list[i]) end
end

--- Runs every spawned coroutine to its end. Raises if one raised.
-- @tparam[opt] number timeout give up after this many seconds (returns false)
-- @treturn boolean true when all finished
function Runner:run(timeout)
  local deadline = timeout and now() + timeout
  local spare = {}
  local seen = {} -- engine -> its completed count when last looked at
  while self.count > 0 do
    local ready = self.ready
    self.ready, spare = spare, ready
    for i = 1, #ready do
      self:_resume(ready[i])
      ready[i] = nil
    end
    if #self.errors > 0 then error(table.concat(self.errors, "\n"), 0) end
    if self.count == 0 then break end
    local by_req = self.by_req
    for engine in pairs(self.engines) do
      local alive, _, finished, completed = pcall(engine.perform, engine)
      local nfinished = alive and finished and #finished or 0
      if not alive then
        -- closed (by one of our coroutines): it leaves the loop; its
        -- requests were cancelled, so their waiters are woken below
        self.engines[engine], seen[engine] = nil, nil
        completed = math.huge
      end
      if completed - (seen[engine] or 0) > nfinished then
        -- someone else (task:poll) called perform() and took news with it:
        -- ask each awaited request instead
        local done = {}
        for req in pairs(by_req) do
          if req:done() then done[#done + 1] = req end
        end
        for i = 1, #done do self:_finished(done[i]) end
      else
        for i = 1, nfinished do self:_finished(finished[i]) end
      end
      if alive then seen[engine] = completed end
    end
    local t = now()
    local timers = self.timers
    while timers[1] and timers[1][1] <= t do
      self:_wake(heap_pop(timers)[2])
    end
    if deadline and t >= deadline then return false end
    if #self.ready == 0 then
      local ms = 1000
      if timers[1] then ms = math.max(0, (timers[1][1] - t) * 1000) end
      if deadline then ms = math.min(ms, math.max(0, (deadline - t) * 1000)) end
      local engine = next(self.engines)
      if engine then
        if next(self.engines, engine) then ms = math.min(ms, 5) end
        pcall(engine.wait, engine, ms) -- a closed engine raises: the next pass drops it
      elseif timers[1] then
        -- every engine closed, coroutines still sleeping: a private idle
        -- engine sleeps without a busy loop
        self.idle = self.idle or core.engine()
        self.idle:wait(ms)
      end
    end
  end
  return true
end

--- Runs `fn(...)` from inside a host's own plain coroutine (a game
-- engine's script slot resumed once per frame) without ever blocking it:
-- koophone's waits inside `fn` yield to a private scheduler, which gets one
-- non-blocking pass each time the host resumes the calling coroutine; in
-- between, the calling coroutine yields `yield_value` to its host. From
-- the main thread (no coroutine to yield) it simply runs `fn` to its end.
--
--     -- in a script the host resumes every frame:
--     local rows = assert(sched.frames(client.sync_command, client, "ls", ids))
-- @tparam function fn
-- @param ... its arguments
-- @return what `fn` returns
function M.frames(fn, ...)
  local unpack = table.unpack or unpack
  local runner = M.runner()
  local args = { n = select("#", ...), ... }
  local res
  runner:spawn(function() res = { n = 0, fn(unpack(args, 1, args.n)) } end)
  local co, main = coroutine.running() -- Lua 5.1/LuaJIT: nil in the main thread
  if co == nil or main then
    runner:run()
  else
    while not runner:run(0) do coroutine.yield(M.frames_yield) end -- one pass per frame
  end
  return unpack(res)
end

--- What `frames` yields to the host between passes (default "koophone").
M.frames_yield = "koophone"

return M
