--- Scheduling: how koophone waits.
--
-- Library code never blocks directly; it calls `sched.await(engine, req)`
-- (until a request finishes) or `sched.sleep(engine, seconds)`. What that
-- means depends on where the code runs:
--
-- * inside a coroutine of a `koophone.loop` (`koophone.spawn` /
--   `koophone.run`, a batch's workers, `sched.frames`): it yields, and the
--   loop resumes exactly that coroutine when its request is done or its
--   time has come;
-- * inside a host's coroutine (OpenResty, cqueues, luv): the host's
--   adapter waits on the engine's descriptor or timeout, and the host runs;
-- * anywhere else: it blocks in the engine's poll (`koophone.loop.block`),
--   which sleeps until a socket is ready — no busy loop — while every other
--   transfer of the engine goes on.
--
-- Hosts with their own loop install a waiter with `sched.set_waiter`.
-- @module koophone.sched
local core = require "koophone.core"
local loop = require "koophone.loop"

local M = {}

local now = core.now
M.now = now

--- The marker that a loop's coroutine yields with (see `koophone.loop`).
M.WAIT = loop.WAIT

-- The default waiter: block in the engine's poll (koophone.loop.block).
local blocking = { await = loop.block, sleep = loop.block_sleep }

-- Runs a loop to its end from code that may block.
function blocking.finish(l) return l:run() end

--- Fills `adapter.await`, `adapter.sleep` and `adapter.finish` for a host
-- that can wait on a descriptor for a while and resume us (cqueues, luv):
-- inside the host (`in_host()`), a wait drives the engine (`loop.drive`),
-- then `wait_once(engine, seconds)` lets the host run until the engine's
-- descriptor is ready or its timeout is due (at most `adapter.max_step`);
-- elsewhere it blocks in the engine.
-- @tparam table adapter gets `await`, `sleep` and `finish`
-- @tparam function in_host true when the running code may yield to the host
-- @tparam function wait_once `(engine, seconds)`: let the host run that long
function M.host_waiter(adapter, in_host, wait_once)
  function adapter.await(engine, req, deadline)
    if not in_host() then return loop.block(engine, req, deadline) end
    while true do
      loop.drive(engine)
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
    if not in_host() then return loop.block_sleep(engine, seconds) end
    local deadline = now() + seconds
    while true do
      local running = loop.drive(engine) or 0
      local left = deadline - now()
      if left <= 0 then return end
      local cap = running > 0 and adapter.max_step or adapter.idle_step
      wait_once(engine, left < cap and left or cap)
    end
  end
  function adapter.finish(l)
    if not in_host() then return l:run() end
    while l:step() > 0 do
      local engine = loop.engines()[1]
      local wake = l:next_wake()
      local cap = engine and adapter.max_step or adapter.idle_step
      if wake and wake < cap then cap = wake end
      if cap > 0 then wait_once(engine or loop.idle_engine(), cap) end
    end
    return true
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
-- `ngx.sleep` in OpenResty). `w` has `await(engine, req, deadline)`,
-- `sleep(engine, seconds)` and `finish(loop)`; `nil` restores blocking waits.
-- @tparam[opt] table w
function M.set_waiter(w) waiter = w or blocking end

--- Returns once `req:done()`, or once `deadline` has passed. Never raises
-- for the request's own outcome; the caller checks `req:done()`.
-- @param engine the engine the request belongs to
-- @param req a request from `engine:submit`
-- @tparam[opt] number deadline a `now()` time to stop waiting at
function M.await(engine, req, deadline)
  if req:done() then return end
  if loop.current() then
    loop.yield_request(engine, req, deadline)
  else
    waiter.await(engine, req, deadline)
  end
end

--- Waits `seconds` while the engine keeps every transfer moving.
-- @param engine
-- @tparam number seconds
function M.sleep(engine, seconds)
  if seconds <= 0 then return end
  if loop.current() then
    loop.yield_until(now() + seconds)
  else
    waiter.sleep(engine, seconds)
  end
end

--- Runs the loop `l` until its coroutines end, from wherever the caller
-- is: blocking in plain code, yielding to the host inside a host's
-- coroutine (OpenResty, cqueues, luv). From inside a loop's own coroutine,
-- spawn into `loop.current()` instead.
-- @tparam Loop l
function M.finish(l)
  if loop.current() then error("koophone: sched.finish from inside a loop; spawn into loop.current()", 2) end
  return waiter.finish(l)
end

--- A new, empty loop (see `koophone.loop`); `sched.runner` is its old name.
-- @treturn Loop
function M.runner() return loop.new() end

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
  local l = loop.new()
  local args = { n = select("#", ...), ... }
  local res
  l:spawn(function() res = { n = 0, fn(unpack(args, 1, args.n)) } end)
  local co, main = coroutine.running() -- Lua 5.1/LuaJIT: nil in the main thread
  if co == nil or main then
    l:run()
  else
    while l:step() > 0 do coroutine.yield(M.frames_yield) end -- one pass per frame
  end
  return unpack(res)
end

--- What `frames` yields to the host between passes (default "koophone").
M.frames_yield = "koophone"

return M
