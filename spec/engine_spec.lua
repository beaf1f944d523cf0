-- koophone.core's engine loop: curl_multi_socket_action over the engine's
-- own interest set (epoll), transfers that start at submit, submits that
-- fail without touching the engine, numeric options in range, and
-- descriptors above FD_SETSIZE — against the emulator.
local core = require "koophone.core"
local emulator = require "spec.support.emulator"

local FD_SETSIZE = 1024

describe("koophone.core engine", function()
  local emu
  setup(function() emu = emulator.start{} end)
  teardown(function() emu:stop() end)
  before_each(function() emu:reset() end)

  local ids = 0
  local function headers(id)
    ids = ids + 1
    return { "X-Auth-Token: " .. emu.token, "x-request-id: " .. (id or ("engine-spec-" .. ids)) }
  end

  -- a task query: the emulator answers "Task not found." (HTTP 400) after
  -- its `task` latency
  local function task_spec(extra)
    local s = { url = emu.url .. "/v1/instances/tasks/x", headers = headers() }
    for k, v in pairs(extra or {}) do s[k] = v end
    return s
  end

  local function answered(req)
    local res = req:response()
    return res ~= nil and res.status == 400 and type(res.body) == "table" and res.body.error_msg == "Task not found."
  end

  -- every request some perform() of this spec reported
  local reported = setmetatable({}, { __mode = "k" })
  local function perform(e)
    local running, finished = e:perform()
    for _, r in ipairs(finished or {}) do
      assert.is_nil(reported[r], "a request reported twice")
      reported[r] = true
    end
    return running, finished
  end

  -- drives until perform() has reported req
  local function drive(e, req)
    while true do
      perform(e)
      if reported[req] then assert.is_true(req:done()) return end
      e:wait(100)
    end
  end

  -- how many requests with this x-request-id the emulator has logged
  local function logged(id)
    local n = 0
    for _, r in ipairs(assert(emu:requests{ endpoint = "task" }).requests) do
      if r.headers["x-request-id"] == id then n = n + 1 end
    end
    return n
  end

  describe("a submit that raises", function()
    -- every way configure can refuse a spec, each a clear message
    local bad = {
      { { headers = { 1 } }, "request headers%[1%] must be a string" },
      { { headers = "X-A: b" }, "request field 'headers' must be a list of strings" },
      { { http_version = "3" }, "request field 'http_version' must be" },
      { { json = { x = 0 / 0 } }, "request json:" },
      { { json = { f = print } }, "request json:" },
      { { body = 5 }, "request field 'body' must be a string" },
      { { method = 1 }, "request field 'method' must be a string" },
      { { timeout = -1 }, "request field 'timeout' must be a number from 0 to 2147483647" },
      { { timeout = 0 / 0 }, "request field 'timeout' must be a number from 0 to" },
      { { timeout = 1e300 }, "request field 'timeout' must be a number from 0 to" },
      { { connect_timeout = math.huge }, "request field 'connect_timeout' must be a number from 0 to" },
      { { max_response = -math.huge }, "request field 'max_response' must be a number from 0 to" },
      { { low_speed_limit = 1, low_speed_time = 1e300 }, "request field 'low_speed_time'" },
      { { ca_file = {} }, "request field 'ca_file' must be a string" },
    }

    local function refuse_all(e)
      for i, case in ipairs(bad) do
        local ok, err = pcall(e.submit, e, task_spec(case[1]))
        assert.is_false(ok, "case " .. i .. " was accepted")
        assert.matches(case[2], tostring(err))
        assert.equal(2, e:inflight(), "case " .. i .. " changed the in-flight count")
      end
      collectgarbage(); collectgarbage() -- the refused requests' finalizers
      assert.equal(2, e:inflight())
      assert.equal("koophone.engine (2 in flight)", tostring(e))
    end

    it("leaves two requests in flight, and close() cancels both", function()
      emu:config{ latency = { task = 0.5 } }
      local e = core.engine()
      local a = e:submit(task_spec())
      local b = e:submit(task_spec())
      perform(e)
      assert.equal(2, e:inflight())
      refuse_all(e)
      e:close()
      for _, r in ipairs{ a, b } do
        assert.is_true(r:done())
        local res, err = r:response()
        assert.is_nil(res)
        assert.equal("cancelled", err.kind)
      end
    end)

    it("leaves two requests in flight that then complete, and the engine keeps working", function()
      emu:config{ latency = { task = 0.3 } }
      local e = core.engine()
      local a = e:submit(task_spec())
      local b = e:submit(task_spec())
      refuse_all(e)
      drive(e, a)
      drive(e, b)
      assert.is_true(answered(a))
      assert.is_true(answered(b))
      assert.equal(0, e:inflight())
      local c = e:submit(task_spec())
      drive(e, c)
      assert.is_true(answered(c))
      e:close()
    end)
  end)

  it("refuses numeric options out of range (1e300, NaN, -1, huge) with the field and its limit", function()
    local e = core.engine()
    local values = { 1e300, 0 / 0, -1, math.huge, -math.huge, 2 ^ 63 }
    local fields = { "timeout", "connect_timeout", "low_speed_limit", "low_speed_time",
                     "max_connection_age", "max_response" }
    for _, f in ipairs(fields) do
      for _, v in ipairs(values) do
        local spec = task_spec{ [f] = v }
        if f == "low_speed_time" then spec.low_speed_limit = 1 end
        local ok, err = pcall(e.submit, e, spec)
        assert.is_false(ok, f .. " = " .. tostring(v) .. " was accepted")
        assert.matches("request field '" .. f .. "' must be a number from 0 to %d+ %(", err)
      end
    end
    assert.equal(0, e:inflight())
    for _, f in ipairs{ "max_connections", "max_host_connections", "pool" } do
      for _, v in ipairs(values) do
        local ok, err = pcall(core.engine, { [f] = v })
        assert.is_false(ok, f .. " = " .. tostring(v) .. " was accepted")
        assert.matches("engine option '" .. f .. "' must be a number from 0 to 1000000", err)
      end
      assert.has_error(function() core.engine{ [f] = "8" } end)
    end
    assert.has_error(function() e:wait(0 / 0) end)
    -- the largest values are accepted, fractions truncated
    local req = e:submit(task_spec{ timeout = 2147483647, connect_timeout = 1500.7,
                                    max_connection_age = 2147483, max_response = 2147483647 })
    drive(e, req)
    assert.is_true(answered(req))
    e:close()
  end)

  it("starts a transfer at submit: the server sees it before any perform()", function()
    local e = core.engine()
    -- a fresh connection: the connect is under way when submit returns
    local first = e:submit(task_spec())
    local r, w = e:fds()
    assert.equal(1, #r + #w)
    drive(e, first)
    -- a kept-alive one: the request itself is sent inside submit
    local req = e:submit(task_spec{ headers = headers("engine-spec-at-submit") })
    os.execute("sleep 0.2")
    assert.equal(1, logged("engine-spec-at-submit"))
    drive(e, req)
    assert.is_true(answered(req))
    e:close()
  end)

  it("sends a body with its headers, and never again when a kept-alive connection died under it", function()
    local e = core.engine()
    local function post(id, instance)
      local spec = { url = emu.url .. "/v1/instances/sync-command", headers = headers(id),
                     json = { command = "echo once", instance_ids = { instance } } }
      spec.headers[3] = "Content-Type: application/json"
      local req = e:submit(spec)
      drive(e, req)
      return req:response()
    end
    assert.equal(200, assert(post("engine-spec-keep", "kp000020")).status)
    -- the server runs the command, then drops the (reused) connection:
    -- curl would send the request again on a fresh one
    emu:add_fault { endpoint = "sync-command", kind = "reset", count = 1 }
    local res, err = post("engine-spec-dropped", "kp000021")
    assert.is_nil(res)
    assert.same({ "protocol", 65, "necessary data rewind wasn't possible", true },
                { err.kind, err.curl_code, err.message, err.sent })
    assert.equal(2, emu:requests { endpoint = "sync-command" }.count) -- the first, and this one once
    assert.equal(1, emu:executions().executions.kp000021["echo once"])
    e:close()
  end)

  it("keeps a response for the next response(), and keeps nothing after take()", function()
    local e = core.engine()
    local kept = e:submit(task_spec())
    drive(e, kept)
    local res = kept:response()
    assert.is_true(answered(kept))
    assert.equal(res, kept:response()) -- built once, then cached
    local taken = e:submit(task_spec())
    drive(e, taken)
    local weak = setmetatable({}, { __mode = "v" })
    weak.res = taken:take()
    assert.equal("Task not found.", weak.res.body.error_msg)
    collectgarbage()
    collectgarbage()
    assert.is_nil(weak.res) -- the request still lives; its reply did not stay with it
    assert.has_error(function() taken:take() end, "the response was taken (req:take())")
    assert.has_error(function() taken:response() end, "the response was taken (req:take())")
    -- an error is handed over the same way
    local failed = e:submit{ url = "http://[::1" }
    perform(e)
    local none, err = failed:take()
    assert.is_nil(none)
    assert.equal("table", type(err))
    assert.has_error(function() failed:take() end)
    e:close()
  end)

  it("reports a request that ended inside submit at the next perform()", function()
    local e = core.engine()
    local req = e:submit{ url = "http://[::1" } -- refused by curl's URL parser at once
    assert.is_true(req:done())
    assert.equal(0, e:inflight())
    assert.equal(0, e:timeout()) -- news waiting: a host must call perform() now
    local running, finished = perform(e)
    assert.equal(0, running)
    assert.equal(req, finished[1])
    local _, err = req:response()
    assert.is_table(err)
    assert.is_nil((select(2, e:perform())))
    e:close()
  end)

  it("reuses reply buffers without mixing replies: short after long, over 64 KB, unread, after close", function()
    -- outputs of 3,000 bytes: 32 of them make a reply of ~100 KB (freed,
    -- not kept), 8 of them ~25 KB (kept for the next reply)
    local out = function(tag) return (tag .. ("0123456789"):rep(300)):sub(1, 3000) end
    assert(emu:config { max_execute_msg = 4096, commands = {
      { match = "^echo big", output = out("big:") }, { match = "^echo mid", output = out("mid:") },
      { match = "^echo small", output = "small" } } })
    local e = core.engine()
    local function sync(command, n, extra)
      local list = {}
      for i = 1, n do list[i] = ("kp%06d"):format(100 + i) end
      local spec = { url = emu.url .. "/v1/instances/sync-command", headers = headers(),
                     json = { command = command, instance_ids = list } }
      spec.headers[3] = "Content-Type: application/json"
      for k, v in pairs(extra or {}) do spec[k] = v end
      local req = e:submit(spec)
      drive(e, req)
      return req
    end
    local function outputs(req)
      local res = assert(req:response())
      assert.equal(200, res.status)
      local got = {}
      for i, item in ipairs(res.body.data.cmd_results) do got[i] = item.execute_msg end
      return got
    end
    local function rep(v, n) local t = {} for i = 1, n do t[i] = v end return t end
    for _ = 1, 2 do
      assert.same(rep(out("big:"), 32), (outputs(sync("echo big", 32))))
      assert.same(rep(out("mid:"), 8), (outputs(sync("echo mid", 8))))
      assert.same({ "small" }, (outputs(sync("echo small", 1))))
      -- raw: exactly the reply's bytes, nothing left from a longer one
      local res = assert(sync("echo small", 1, { decode = false }):response())
      assert.equal("small", require("cjson").decode(res.raw).data.cmd_results[1].execute_msg)
      assert.same(rep(out("mid:"), 8), (outputs(sync("echo mid", 8))))
    end
    sync("echo mid", 8) -- finished, never read: collected with its buffer
    collectgarbage()
    local unread = sync("echo mid", 8)
    e:close() -- the spares are freed; the unread reply is still there
    assert.same(rep(out("mid:"), 8), (outputs(unread)))
  end)

  it("makes engine:fd() readable when a response arrives, and only then", function()
    local ok, uv = pcall(require, "luv")
    if not ok then pending("luv is not installed") return end
    emu:config{ latency = { task = 0.4 } }
    local e = core.engine()
    drive(e, e:submit(task_spec())) -- warm: the next request is sent at submit
    local req = e:submit(task_spec())
    perform(e)
    local fd = e:fd()
    assert.is_number(fd)
    local poll, timer = uv.new_poll(fd), uv.new_timer()
    local t0, ready_at = core.now(), nil
    poll:start("r", function()
      ready_at = core.now() - t0
      poll:stop(); timer:stop()
    end)
    timer:start(3000, 0, function() poll:stop() end)
    uv.run("default")
    poll:close(); timer:close(); uv.run("nowait")
    assert.is_number(ready_at, "engine:fd() never became readable")
    assert.is_true(ready_at > 0.25, ("readable after %.3f s, before the response"):format(ready_at))
    local _, finished = perform(e)
    assert.equal(req, finished and finished[1])
    -- a ready engine does not sleep in wait(); an idle one does
    local t1 = core.now()
    e:wait(200)
    assert.is_true(core.now() - t1 > 0.15)
    e:close()
  end)

  it("wakes a wait() with wakeup()", function()
    local e = core.engine()
    e:wakeup()
    local t = core.now()
    e:wait(2000)
    assert.is_true(core.now() - t < 1)
    t = core.now()
    e:wait(100) -- the wake-up was consumed
    assert.is_true(core.now() - t >= 0.09)
    e:close()
  end)

  it("runs 5,000 concurrent requests on descriptors above FD_SETSIZE", function()
    local N = tonumber(os.getenv("KOOPHONE_FD_SPEC_N")) or 5000
    local limit = tonumber((emulator.run("ulimit -n")))
    if limit and limit < N + FD_SETSIZE + 200 then
      error(("this spec needs `ulimit -n` >= %d (it is %d)"):format(N + FD_SETSIZE + 200, limit))
    end
    -- push curl's sockets above FD_SETSIZE (after closing what earlier
    -- specs left to the collector, so no low descriptor frees up meanwhile)
    collectgarbage(); collectgarbage()
    local dummies = {}
    for i = 1, FD_SETSIZE + 100 do dummies[i] = assert(io.open("/dev/null")) end
    -- every request must still be waiting at the server when the last one
    -- is submitted, however slow submits are (valgrind: ~20x, and each
    -- costs more as curl scans more busy connections): submit in chunks,
    -- each told to wait twice the time the rest should take to submit
    local pe = core.engine()
    local probe, t = {}, core.now()
    for i = 1, 200 do probe[i] = pe:submit(task_spec()) end
    local chunk_time = (core.now() - t) * 5
    for i = 1, 200 do drive(pe, probe[i]) end
    pe:close()
    local e = core.engine()
    local CHUNK = 1000
    local reqs = {}
    local t0 = core.now()
    for first = 1, N, CHUNK do
      local last = math.min(N, first + CHUNK - 1)
      local chunks_left = math.ceil((N - first + 1) / CHUNK)
      emu:config{ latency = { task = math.max(2, 2 * chunk_time * chunks_left + 1) } }
      local c0 = core.now()
      for i = first, last do reqs[i] = e:submit(task_spec()) end
      chunk_time = core.now() - c0
    end
    local submitted_in = core.now() - t0
    local peak, low = 0, math.huge
    local function count_fds()
      local r, w = e:fds()
      local both, n = {}, 0
      for _, fd in ipairs(r) do both[fd] = true end
      for _, fd in ipairs(w) do both[fd] = true end
      for fd in pairs(both) do
        n = n + 1
        if fd < low then low = fd end
      end
      if n > peak then peak = n end
    end
    count_fds() -- every socket is open (connected or connecting) by now
    local pending_n, seen_fd = N, e:fd()
    while pending_n > 0 do
      local _, finished = perform(e)
      pending_n = pending_n - (finished and #finished or 0)
      count_fds()
      if pending_n > 0 then e:wait(1000) end
      assert.is_true(core.now() - t0 < 600, "the requests did not finish")
    end
    for i = 1, #dummies do dummies[i]:close() end
    local ok_n = 0
    for i = 1, N do
      if answered(reqs[i]) then ok_n = ok_n + 1 end
    end
    assert.equal(N, ok_n)
    assert.is_true(low >= FD_SETSIZE, "a socket below FD_SETSIZE: " .. low)
    assert.is_true(peak >= N, ("at most %d sockets at once (submits took %.1f s)"):format(peak, submitted_in))
    assert.is_true(seen_fd == nil or seen_fd >= FD_SETSIZE) -- the epoll set too (nil: poll() build)
    e:close()
  end)
end)
