-- core.waker: the thread that tells a host "an engine has work" (or "curl's
-- timer is due") with one byte on a unix socket: what OpenResty's driver
-- waits on. Here the host is played by LuaSocket's unix client, against
-- the emulator. The host arms the thread with "<ms>\n" (curl's timer; -1:
-- none) and reads one byte per arming.
local core = require "koophone.core"
local emulator = require "spec.support.emulator"

local has_unix, unix = pcall(require, "socket.unix")
local describe_or_skip = (core.waker and has_unix) and describe or pending

local function connect(path)
  local c = assert((unix.stream or unix)())
  assert(c:connect(path))
  return c
end

-- one byte within `secs`, or nil and "timeout"/"closed"
local function byte(c, secs)
  c:settimeout(secs)
  local b, err = c:receive(1)
  return b, err
end

local function exists(path)
  return select(2, emulator.run("test -S " .. emulator.shell_quote(path))) == 0
end

describe_or_skip("core.waker", function()
  local emu
  setup(function() emu = emulator.start { scenario = { latency = { default = 0.1 } } } end)
  teardown(function() emu:stop() end)

  local function get(engine, path)
    return engine:submit { url = emu.url .. (path or "/v1/instances/tasks/nope"), method = "GET", timeout = 10000 }
  end

  -- a request to its end, so that the next one reuses the connection (a
  -- new connection makes the engine ready for writing first)
  local function warm(engine, k)
    local reqs = {}
    for i = 1, k or 1 do reqs[i] = get(engine) end
    for i = 1, #reqs do
      while not reqs[i]:done() do engine:perform() engine:wait(100) end
    end
    engine:perform()
  end

  -- a waker (with `opts`) that watches `engine` (a new one, warmed with `k`
  -- connections, if nil), and a host connected to it: w, engine, c
  local function hosted(opts, engine, k)
    local w = assert(core.waker(opts))
    if not engine then
      engine = core.engine()
      warm(engine, k)
    end
    w:add(engine)
    return w, engine, connect(w:path())
  end

  -- drives `engine` the way a host does, turn by turn, until `req` is done
  local function follow(c, engine, req)
    local turns = 0
    while not req:done() do
      c:send(engine:timeout() .. "\n")
      assert.equal("!", byte(c, 5))
      turns = turns + 1
      engine:perform()
    end
    return turns
  end

  it("listens on a socket file only its owner may open, removed by close()", function()
    local w = assert(core.waker())
    local path = w:path()
    assert.matches("/koophone%-waker%-%d+%-%x+$", path)
    assert.is_true(exists(path))
    local mode = emulator.run("stat -c %a " .. emulator.shell_quote(path)):match("%d+")
    assert.equal("600", mode)
    assert.equal("koophone.waker (" .. path .. ")", tostring(w))
    w:close()
    assert.is_false(exists(path))
    assert.equal("koophone.waker (closed)", tostring(w))
    w:close() -- twice is fine
    assert.has_error(function() w:ring() end, "koophone waker is closed")
  end)

  it("removes the socket files of killed processes as it starts", function()
    local dead = emulator.run("sh -c 'echo $$'"):match("%d+") -- a pid that has ended
    local dir = (os.getenv("TMPDIR") or ""):gsub("/$", "")
    if dir == "" then dir = "/tmp" end
    -- names of this run's own (the matrix runs several versions at once)
    local tag = ("%08x%08x"):format(math.random(0, 0x7fffffff), math.floor(core.now() * 1000) % 0x7fffffff)
    local stale = dir .. "/koophone-waker-" .. dead .. "-" .. tag
    local alive = dir .. "/koophone-waker-1-" .. tag -- pid 1 lives: left alone
    emulator.run("touch " .. stale .. " " .. alive)
    local w = assert(core.waker())
    assert.matches("^" .. dir:gsub("%p", "%%%0") .. "/", w:path())
    assert.is_false(select(2, emulator.run("test -e " .. stale)) == 0)
    assert.is_true(select(2, emulator.run("test -e " .. alive)) == 0)
    emulator.run("rm -f " .. alive)
    w:close()
  end)

  it("returns nil and a message when it cannot make its socket file (the host then steps)", function()
    local out = emulator.run("TMPDIR=/nonexistent/dir " .. emulator.lua_command() ..
      [[ -e 'print(require("koophone.core").waker())']])
    assert.matches("^nil%s+koophone waker: No such file or directory", out)
  end)

  it("sends one byte when a reply arrives, and no other until it is re-armed", function()
    local w, engine, c = hosted()
    local req = get(engine)
    -- nothing yet: the request went out at submit, the emulator answers in 0.1 s
    c:send("-1\n")
    assert.same({ nil, "timeout" }, { byte(c, 0.03) })
    assert.equal("!", byte(c, 5))
    -- the reply is still unread (nobody drove the engine): still no second byte
    assert.same({ nil, "timeout" }, { byte(c, 0.1) })
    -- armed again while the socket is still ready: at once
    c:send("-1\n")
    assert.equal("!", byte(c, 5))
    -- driven: the engine is quiet; armed, nothing comes
    engine:perform()
    assert.is_true(req:done())
    c:send("-1\n")
    assert.same({ nil, "timeout" }, { byte(c, 0.1) })
    c:close()
    engine:close()
    w:close()
  end)

  it("watches several engines; one that closes leaves the others watched", function()
    local w = assert(core.waker())
    local a, b = core.engine(), core.engine()
    w:add(a)
    w:add(b)
    w:add(b) -- twice is fine
    local c = connect(w:path())
    a:close()
    local req = get(b)
    assert.is_true(follow(c, b, req) >= 1)
    assert.has_error(function() w:add(a) end)
    c:close()
    b:close()
    w:close()
  end)

  it("keeps the host's timer: a byte when it is due, none without one", function()
    local w = assert(core.waker())
    local c = connect(w:path())
    local t0 = core.now()
    c:send("80\n")
    assert.equal("!", byte(c, 5))
    local took = core.now() - t0
    assert.is_true(took >= 0.075 and took < 1, ("the 80 ms timer rang after %.3f s"):format(took))
    -- a message split across writes, then a later one replacing it
    c:send("5")
    c:send("000\n-1\n")
    assert.same({ nil, "timeout" }, { byte(c, 0.2) })
    c:send("0\n")
    assert.equal("!", byte(c, 1))
    c:close()
    w:close()
  end)

  it("retime(ms) moves an armed thread's timer earlier, never later, without a byte now", function()
    local w = assert(core.waker())
    local c = connect(w:path())
    c:send("-1\n")
    assert.same({ nil, "timeout" }, { byte(c, 0.05) })
    local t0 = core.now()
    w:retime(500)
    w:retime(60) -- the earlier one counts
    w:retime(300)
    assert.equal("!", byte(c, 5))
    local took = core.now() - t0
    assert.is_true(took >= 0.055 and took < 0.4, ("the timer rang after %.3f s"):format(took))
    -- disarmed (the host is taking its turn): no byte now; the retime
    -- applies to the next arming (at worst an early byte, never a lost
    -- timer: a host may retime before the thread has read its arming)
    w:retime(0)
    assert.same({ nil, "timeout" }, { byte(c, 0.1) })
    c:send("-1\n")
    assert.equal("!", byte(c, 5))
    c:send("-1\n")
    assert.same({ nil, "timeout" }, { byte(c, 0.1) })
    -- armed with a timer: a later retime does not postpone it
    t0 = core.now()
    c:send("80\n")
    w:retime(2000)
    assert.equal("!", byte(c, 5))
    assert.is_true(core.now() - t0 < 0.5)
    c:close()
    w:close()
  end)

  it("arm(ms) arms the thread as the socket message does", function()
    local w, engine, c = hosted()
    assert.same({ nil, "timeout" }, { byte(c, 0.05) }) -- armed at connect: nothing ready
    local t0 = core.now()
    w:arm(80)
    assert.equal("!", byte(c, 5))
    local took = core.now() - t0
    assert.is_true(took >= 0.075 and took < 1, ("the 80 ms timer rang after %.3f s"):format(took))
    -- no timer: a reply
    local req = get(engine)
    w:arm(-1)
    assert.equal("!", byte(c, 5))
    engine:perform()
    assert.is_true(req:done())
    w:arm(-1)
    assert.same({ nil, "timeout" }, { byte(c, 0.1) })
    c:close()
    engine:close()
    w:close()
  end)

  it("arm and retime do not wake the thread: it runs only to send a byte", function()
    -- the thread, by name, and how often it has been woken
    local stat = assert(io.open("/proc/self/stat"))
    local pid = stat:read("*l"):match("^(%d+)")
    stat:close()
    local function wakeups()
      local p = io.popen("grep -l '^koophone-waker$' /proc/" .. pid .. "/task/*/comm 2>/dev/null")
      local comm = p:read("*l")
      p:close()
      assert.is_truthy(comm, "no thread named koophone-waker")
      local f = assert(io.open((comm:gsub("comm$", "status"))))
      local n = tonumber(f:read("*a"):match("voluntary_ctxt_switches:%s*(%d+)"))
      f:close()
      return n
    end
    local w = assert(core.waker())
    local c = connect(w:path())
    local before = wakeups()
    for _ = 1, 100 do
      w:arm(60000)
      w:retime(30000)
      w:arm(-1)
    end
    local by_call = wakeups() - before
    -- the same armings written to the socket: the thread reads each
    before = wakeups()
    for _ = 1, 100 do
      c:send("60000\n")
      emulator.run("true") -- a pause: one message per read
    end
    local by_socket = wakeups() - before
    assert.is_true(by_call <= 2, ("300 calls woke the thread %d times"):format(by_call))
    assert.is_true(by_socket >= 50, ("100 messages woke the thread %d times"):format(by_socket))
    -- still armed, and its timer works
    w:arm(10)
    assert.equal("!", byte(c, 5))
    c:close()
    w:close()
  end)

  it("linger_ms: a reply soon after the last byte waits for the rest of its burst; a lone one does not", function()
    local function burst(linger)
      -- five connections: no connect in what is measured
      local w, engine, c = hosted({ linger_ms = linger }, nil, 5)
      -- a lone reply (nothing sent for a while): at once
      local t0 = core.now()
      assert.equal(1, follow(c, engine, get(engine)))
      local lone = core.now() - t0
      -- five replies 5 ms apart, driven with no timer: one turn per byte
      local reqs = {}
      for i = 1, 5 do
        reqs[i] = get(engine, "/v1/instances/tasks/nope" .. i)
        local t = core.now() + 0.005
        repeat until core.now() >= t
      end
      local turns = 0
      while not reqs[5]:done() do
        c:send("-1\n")
        assert.equal("!", byte(c, 5))
        turns = turns + 1
        engine:perform()
      end
      c:close()
      engine:close()
      w:close()
      return lone, turns
    end
    assert.has_error(function() core.waker { linger_ms = 5000 } end,
      "waker option 'linger_ms' must be a number from 0 to 1000 (ms a reply of a burst is held), got 5000")
    local lone0, turns0 = burst(0)
    local lone, turns = burst(30)
    -- the lone reply was not held (the emulator answers in 0.1 s)
    assert.is_true(lone < 0.125 and lone0 < 0.125, ("lone replies took %.3f and %.3f s"):format(lone, lone0))
    -- held 30 ms from the first of the burst: fewer turns than replies
    assert.is_true(turns < turns0, ("%d turns with linger, %d without"):format(turns, turns0))
  end)

  it("arm(ms, true) and hold(): the first reply is held linger_ms too (the host has several transfers in flight)", function()
    local engine = core.engine()
    warm(engine)
    -- the time from a request to its byte, with a waker of its own (nothing
    -- sent before: no burst begun), armed by `how(w)`; the emulator
    -- answers in 0.1 s and the waker holds 150 ms
    local function reply_after(how)
      local w, _, c = hosted({ linger_ms = 150 }, engine)
      assert.same({ nil, "timeout" }, { byte(c, 0.02) }) -- connected: armed, nothing ready
      local t0 = core.now()
      local req = get(engine)
      how(w)
      assert.equal("!", byte(c, 5))
      local took = core.now() - t0
      engine:perform()
      assert.is_true(req:done())
      c:close()
      w:close()
      return took
    end
    local plain = reply_after(function(w) w:arm(-1) end)
    local held = reply_after(function(w) w:arm(-1, true) end)
    local later = reply_after(function(w) w:arm(-1) w:hold() end)
    assert.is_true(plain < 0.2, ("a lone reply came after %.3f s"):format(plain))
    assert.is_true(held >= 0.245 and held < 1, ("a held reply came after %.3f s"):format(held))
    assert.is_true(later >= 0.245 and later < 1, ("a reply held by hold() came after %.3f s"):format(later))
    -- hold() while disarmed is ignored (the next arming says); a ring is
    -- not a reply: never held
    local w, _, c = hosted({ linger_ms = 150 }, engine)
    w:ring()
    assert.equal("!", byte(c, 5))
    w:hold()
    emulator.run("sleep 1.6") -- past 10 linger_ms: the reply is not the rest of a burst
    local req = get(engine)
    local t0 = core.now()
    w:arm(-1)
    assert.equal("!", byte(c, 5))
    assert.is_true(core.now() - t0 < 0.2, ("a reply after a hold() made while disarmed came after %.3f s"):format(
      core.now() - t0))
    engine:perform()
    assert.is_true(req:done())
    w:arm(-1, true)
    t0 = core.now()
    w:ring()
    assert.equal("!", byte(c, 5))
    assert.is_true(core.now() - t0 < 0.1, ("a ring came after %.3f s"):format(core.now() - t0))
    c:close()
    w:close()
    engine:close()
  end)

  it("ring() sends a byte with no engine ready, once", function()
    local w = assert(core.waker())
    local c = connect(w:path())
    w:ring()
    assert.equal("!", byte(c, 5))
    c:send("-1\n")
    -- the ring was used up when the byte went: armed, nothing comes
    assert.same({ nil, "timeout" }, { byte(c, 0.1) })
    w:ring()
    assert.equal("!", byte(c, 5))
    c:close()
    w:close()
  end)

  it("goes back to accepting when the host closes its end (a driver that stops and starts again)", function()
    local w = assert(core.waker())
    local engine = core.engine()
    w:add(engine)
    for _ = 1, 3 do
      local c = connect(w:path())
      assert.is_true(follow(c, engine, get(engine)) >= 1)
      c:close()
    end
    engine:close()
    w:close()
  end)

  it("refuses a connection from another process", function()
    local w = assert(core.waker())
    local child = emulator.lua_command() .. " -e " .. emulator.shell_quote("P = [[" .. w:path() .. "]]") ..
      [[ -e 'local u = require "socket.unix"
      local c = (u.stream or u)(); assert(c:connect(P)); c:settimeout(5)
      print(c:receive(1))' ]]
    w:ring() -- a byte would be there for an accepted connection
    local out = emulator.run("unset LD_PRELOAD; " .. child)
    assert.matches("nil%s+closed", out)
    -- the owner still gets in
    local c = connect(w:path())
    assert.equal("!", byte(c, 5))
    c:close()
    w:close()
  end)

  it("close() stops a thread that serves a connection; __gc does it for a dropped waker", function()
    local w = assert(core.waker())
    local c = connect(w:path())
    local t0 = core.now()
    w:close()
    assert.is_true(core.now() - t0 < 1)
    assert.same({ nil, "closed" }, { byte(c, 5) })
    c:close()
    local path = assert(core.waker()):path()
    collectgarbage()
    collectgarbage()
    assert.is_false(exists(path))
  end)
end)
