-- Every phone gets exactly one true result and no command runs twice: the
-- ways that promise broke once, each named after what is guaranteed now.
local koophone = require "koophone"
local core = require "koophone.core"
local loop = require "koophone.loop"
local batch = require "koophone.batch"
local journal = require "koophone.journal"
local emulator = require "spec.support.emulator"

local function ids(n, from)
  local t = {}
  for i = 1, n do t[i] = ("kp%06d"):format((from or 0) + i - 1) end
  return t
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

describe("promises", function()
  local emu, client
  setup(function()
    emu = emulator.start { scenario = { durations = { default = 0.3 } } }
    client = assert(koophone.new { token = emu.token, endpoint = emu.url, cph_endpoint = emu.url,
                                   project_id = emu.project_id, poll_interval = 0.1 })
  end)
  teardown(function()
    if client then client:close() end
    if emu then emu:stop() end
  end)
  before_each(function() emu:reset() end)

  it("a 200 reply whose error_code is the number 0 is a success, not 'vendor error 0.0'", function()
    emu:add_fault { endpoint = "sync-command", kind = "numeric_code" }
    emu:add_fault { endpoint = "async-command", kind = "numeric_code" }
    emu:add_fault { endpoint = "task", kind = "numeric_code" }
    local rows = assert(client:sync_command("echo zero", ids(3)))
    for _, r in ipairs(rows) do assert.equal("ok", r.status) end
    local task = assert(client:async_command("echo zero", ids(3)))
    for _, r in ipairs(assert(task:wait { timeout = 10 })) do assert.equal("ok", r.status) end
  end)

  it("a row whose command may have run is flagged, and retry_failed does not run it again", function()
    emu:add_fault { endpoint = "sync-command", kind = "reset", count = 1 }
    local rep = assert(batch.run(client, "echo once", ids(3), { mode = "sync" }))
    for _, r in ipairs(rep.rows) do
      assert.equal("error", r.status)
      assert.is_true(r.maybe_executed)
    end
    local again = assert(rep:retry_failed())
    assert.equal(0, again.summary.total)
    assert.equal(0, emu:requests { endpoint = "sync-command" }.count - 1)
  end)

  it("one bad status reply does not end a task: the query is read again", function()
    emu:add_fault { endpoint = "task", kind = "missing", count = 1 }
    local task = assert(client:async_command("echo later", ids(20)))
    local rows = assert(task:wait { timeout = 20 })
    for _, r in ipairs(rows) do assert.equal("ok", r.status) end
    assert.is_true(task.polls >= 2)
  end)

  it("task:wait{timeout = 1} returns after about a second while a status query stalls", function()
    emu:add_fault { endpoint = "task", kind = "stall", seconds = 6 }
    local task = assert(client:async_command("echo stall", ids(2)))
    local t0 = koophone.now()
    local rows, msg, err = task:wait { timeout = 1 }
    local took = koophone.now() - t0
    assert.is_nil(rows)
    assert.is_string(msg)
    assert.equal("timeout", err.kind)
    assert.is_true(took < 1.8, ("took %.2fs"):format(took))
    for _, r in ipairs(err.rows) do assert.equal("timeout", r.status) assert.is_true(r.maybe_executed) end
  end)

  it("two coroutines waiting on one task are both woken", function()
    local task = assert(client:async_command("echo two", ids(4)))
    local got = {}
    for k = 1, 2 do
      koophone.spawn(function() got[k] = assert(task:wait { timeout = 10 }) end)
    end
    assert.is_true(koophone.run(15))
    assert.equal(4, #got[1])
    assert.equal(4, #got[2])
  end)

  it("two coroutines waiting on one task share its status queries", function()
    local function requests_for(waiters)
      local task = assert(client:async_command("sleep 1", ids(4)))
      local before = client.transport.stats.requests
      local got = {}
      for k = 1, waiters do
        koophone.spawn(function() got[k] = assert(task:wait { timeout = 10 }) end)
      end
      assert.is_true(koophone.run(15))
      for k = 1, waiters do assert.equal("ok", got[k][4].status) end
      return client.transport.stats.requests - before
    end
    local alone, both = requests_for(1), requests_for(2)
    -- each query once (a sleep that ends as a query starts may add one)
    assert.is_true(both <= alone + 1, ("one waiter: %d queries, two: %d"):format(alone, both))
  end)

  it("a frame loop's task:poll() and a coroutine's task:wait share the task's status queries", function()
    local function requests_for(polling, waiting)
      local task = assert(client:async_command("sleep 1", ids(4)))
      local before = client.transport.stats.requests
      local waited
      if waiting then koophone.spawn(function() waited = assert(task:wait { timeout = 10 }) end) end
      local l, vsync, t0, done, rows = loop.default(), core.engine(), core.now(), false, nil
      repeat -- a 100 fps frame loop: step everything, never block, "vsync"
        l:step()
        if polling then done, rows = task:poll() end
        vsync:wait(10)
      until ((not polling or done) and (not waiting or waited)) or core.now() - t0 > 10
      vsync:close()
      if polling then assert.equal("ok", rows[4].status) end
      if waiting then assert.equal("ok", waited[4].status) end
      return client.transport.stats.requests - before
    end
    local polled, waited, both = requests_for(true, false), requests_for(false, true), requests_for(true, true)
    -- the queries of one of them, not of both (a query due as the other's
    -- answer lands may add one)
    assert.is_true(both <= math.max(polled, waited) + 1,
      ("poll alone: %d queries, wait alone: %d, both: %d"):format(polled, waited, both))
  end)

  it("a wait that times out ends that wait only: another waiter, or a later wait, sees the jobs end", function()
    local task = assert(client:async_command("sleep 1", ids(3)))
    local short, long = {}, {}
    koophone.spawn(function() short = { task:wait { timeout = 0.3 } } end)
    koophone.spawn(function() long = { task:wait { timeout = 10 } } end)
    assert.is_true(koophone.run(15))
    assert.is_nil(short[1])
    assert.equal("timeout", short[3].kind)
    assert.same({ "timeout", true }, { short[3].rows[1].status, short[3].rows[1].maybe_executed })
    assert.equal("ok", long[1][1].status)
    -- and alone: a wait that gave up leaves the task to the next one
    task = assert(client:async_command("sleep 1", ids(2)))
    local rows, _, err = task:wait { timeout = 0.2 }
    assert.is_nil(rows)
    assert.equal("timeout", err.rows[2].status)
    rows = assert(task:wait { timeout = 10 })
    assert.same({ "ok", "ok" }, { rows[1].status, rows[2].status })
  end)

  it("a waiter abandoned in the middle of a status query holds another up for at most Task.SHARE_QUERY", function()
    local Task = require "koophone.task"
    emu:config { latency = { task = 2 } } -- status queries take 2 s
    local task = assert(client:async_command("sleep 0", ids(2)))
    local abandoned = loop.new()
    abandoned:spawn(function() task:wait { timeout = 30 } end)
    local t0 = core.now()
    repeat abandoned:step() until task.querying or core.now() - t0 > 5
    assert.is_number(task.querying) -- its query is in flight; its loop is never stepped again
    local rows = assert(task:wait { timeout = 20 })
    local took = core.now() - t0
    assert.same({ "ok", "ok" }, { rows[1].status, rows[2].status })
    -- its own query after SHARE_QUERY (1 s), answered 2 s later
    assert.is_true(took < Task.SHARE_QUERY + 2 + 1.5, ("took %.2fs"):format(took))
  end)

  it("a frame loop that stops polling in the middle of a status query holds a waiter up for at most Task.SHARE_QUERY",
     function()
    local Task = require "koophone.task"
    emu:config { latency = { task = 2 } } -- status queries take 2 s
    local task = assert(client:async_command("sleep 0", ids(2)))
    local t0 = core.now()
    repeat task:poll() until task.querying or core.now() - t0 > 5
    assert.is_number(task.querying) -- poll()'s query is in flight; poll() is never called again
    local rows = assert(task:wait { timeout = 20 })
    local took = core.now() - t0
    assert.same({ "ok", "ok" }, { rows[1].status, rows[2].status })
    -- its own query after SHARE_QUERY (1 s), answered 2 s later
    assert.is_true(took < Task.SHARE_QUERY + 2 + 1.5, ("took %.2fs"):format(took))
  end)

  it("closing a client inside koophone.spawn leaves the other coroutines running", function()
    local other = assert(koophone.new { token = emu.token, endpoint = emu.url, poll_interval = 0.1 })
    local done = {}
    koophone.spawn(function()
      local t = assert(other:async_command("echo a", ids(2)))
      other:close()
      local rows, _, err = t:wait { timeout = 5 }
      done.closed = rows or err
    end)
    koophone.spawn(function()
      local t = assert(client:async_command("echo b", ids(2, 10)))
      done.open = assert(t:wait { timeout = 10 })
    end)
    assert.is_true(koophone.run(15))
    assert.equal("closed", done.closed.kind)
    assert.equal(2, #done.open)
    for _, r in ipairs(done.open) do assert.equal("ok", r.status) end
  end)

  it("'.' and '..' are never sent as task or job ids", function()
    for _, id in ipairs { "..", ".", "..." } do
      local v, msg, err = client:query_task(id)
      assert.is_nil(v)
      assert.equal("task_id", err.field, msg)
      v, msg, err = client:job(id)
      assert.is_nil(v)
      assert.equal("job_id", err.field, msg)
      v, msg, err = client:task(id)
      assert.is_nil(v)
      assert.equal("task_id", err.field, msg)
    end
    assert.equal(0, emu:requests().count)
  end)

  it("a proxy table as an id list is refused with the reason, not 'must not be empty'", function()
    local proxy = setmetatable({}, { __index = { "kp000001" }, __len = function() return 1 end })
    local v, msg, err = client:sync_command("ls", proxy)
    assert.is_nil(v)
    assert.equal("instance_ids", err.field)
    assert.matches("metatable", msg)
  end)

  it("after close(), calls return nil, message, err instead of raising", function()
    local c = assert(koophone.new { token = emu.token, endpoint = emu.url })
    local t = assert(c:async_command("echo c", ids(1)))
    c:close()
    local v, msg, err = c:sync_command("ls", ids(1))
    assert.is_nil(v)
    assert.is_string(msg)
    assert.equal("closed", err.kind)
    v, msg, err = t:wait { timeout = 1 }
    assert.is_nil(v)
    assert.equal("closed", err.kind, msg)
    assert.equal(0, c:step())
  end)
end)

describe("journals", function()
  local path
  before_each(function() path = os.tmpname(); os.remove(path) end)
  after_each(function() os.remove(path) end)

  it("are created private (mode 0600): they may hold commands", function()
    local j = assert(journal.open(path))
    assert(j:write { type = "x" })
    j:close()
    local out = emulator.run("stat -c %a " .. emulator.shell_quote(path))
    assert.equal("600", out:match("%d+"))
  end)

  it("never glue two records: a torn last line is cut before the next record", function()
    local j = assert(journal.open(path))
    assert(j:write { type = "first", n = 1 })
    j:close()
    local f = assert(io.open(path, "ab"))
    f:write('{"type":"torn","n":') -- a crash between the JSON and its newline
    f:close()
    j = assert(journal.open(path))
    assert(j:write { type = "second", n = 2 })
    j:close()
    local recs = assert(journal.read(path))
    assert.equal(2, #recs)
    assert.equal("first", recs[1].type)
    assert.equal("second", recs[2].type)
    assert.equal(2, select(2, read(path):gsub("\n", "")))
  end)
end)

describe("IAM renewal", function()
  local emu
  setup(function() emu = emulator.start { scenario = { durations = { default = 0.1 } } } end)
  teardown(function() emu:stop() end)

  it("belongs to no single caller: an abandoned renewal times out and the next caller renews afresh", function()
    local c = assert(koophone.new { iam = { user = "emulator-user", password = "emulator-password",
      domain = "emulator-domain", project_id = emu.project_id, endpoint = emu.url }, endpoint = emu.url })
    c.auth.renew_timeout = 1
    -- a coroutine starts the renewal and is never resumed again
    local owner = loop.new()
    local co = owner:spawn(function() return c.auth:renew() end)
    owner:step()
    assert.equal("suspended", coroutine.status(co))
    assert.truthy(c.auth.renewing)
    local t0 = core.now()
    local rows, msg, err = c:sync_command("echo a", { "kp000001" })
    assert.is_true(core.now() - t0 < 3, "waited " .. (core.now() - t0))
    assert.is_nil(rows)
    assert.equal("timeout", err.kind, msg)
    -- the next caller starts a fresh renewal and gets through
    rows = assert(c:sync_command("echo b", { "kp000001" }))
    assert.equal("ok", rows[1].status)
    c:close()
  end)
end)

describe("resume", function()
  local emu, client, path
  setup(function()
    emu = emulator.start { scenario = { durations = { default = 0.1 } } }
    client = assert(koophone.new { token = emu.token, endpoint = emu.url, poll_interval = 0.1 })
  end)
  teardown(function() client:close(); emu:stop() end)
  before_each(function() path = os.tmpname(); os.remove(path); emu:reset() end)
  after_each(function() os.remove(path) end)

  -- a journal as a crash leaves it: the batch record, then nothing sent
  local function interrupted(command, list)
    local rep = assert(batch.run(client, command, list, { journal = path, timeout = 0.000001 }))
    assert.equal(0, rep.summary.ok)
    assert.equal(0, emu:requests().count)
  end

  it("runs exactly the original command or refuses: never the redacted stand-in", function()
    local secret = "curl -s https://obs.example.com/a.apk?Signature=SECRETSIG&AccessKeyId=AK1"
    interrupted(secret, ids(3))
    assert.is_nil(read(path):find("SECRETSIG", 1, true))
    -- without the command: refused, nothing sent
    local r, msg, err = batch.resume(client, path, { submit_missing = true })
    assert.is_nil(r)
    assert.equal("command", err.field, msg)
    -- with another command: refused
    r, msg = batch.resume(client, path, { submit_missing = true, command = secret .. "X" })
    assert.is_nil(r)
    assert.matches("not the command", msg)
    assert.equal(0, emu:requests().count)
    -- with the original: run as it was
    local rep = assert(batch.resume(client, path, { submit_missing = true, command = secret }))
    assert.equal(3, rep.summary.ok)
    for _, row in ipairs(rep.rows) do assert.is_nil(row.output and row.output:find("redacted")) end
    local seen = emu:requests { endpoint = "async-command" }.requests[1]
    assert.is_nil(tostring(seen and seen.body or ""):find("<redacted>", 1, true))
  end)

  it("sends a command without secrets as it was stored", function()
    interrupted("echo plain", ids(2))
    local rep = assert(batch.resume(client, path, { submit_missing = true }))
    assert.equal(2, rep.summary.ok)
  end)
end)
