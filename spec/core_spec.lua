-- koophone.core: the C engine and request userdata, against the emulator.
local core = require "koophone.core"
local emulator = require "spec.support.emulator"

describe("koophone.core", function()
  local emu
  setup(function() emu = emulator.start{} end)
  teardown(function() emu:stop() end)
  before_each(function() emu:reset() end)

  local function drive(engine, req)
    repeat engine:perform() if not req:done() then engine:wait(100) end until req:done()
  end

  local function headers(extra)
    local h = { "X-Auth-Token: " .. emu.token, "x-request-id: core-spec" }
    for _, v in ipairs(extra or {}) do h[#h + 1] = v end
    return h
  end

  it("submits without blocking and reports finished requests from perform()", function()
    local e = core.engine()
    local req = e:submit{ url = emu.url .. "/_emulator/health" }
    assert.is_false(req:done())
    assert.equal(1, e:inflight())
    local seen = {}
    repeat
      local _, finished = e:perform()
      for _, r in ipairs(finished or {}) do seen[#seen + 1] = r end
      if #seen == 0 then e:wait(100) end
    until #seen > 0
    assert.equal(req, seen[1])
    assert.equal(0, e:inflight())
    local res = assert(req:response())
    assert.equal(200, res.status)
    assert.is_true(res.body.ok)
  end)

  it("encodes a json body and decodes the reply with its own cjson", function()
    local e = core.engine()
    local req = e:submit{ url = emu.url .. "/v1/instances/sync-command", method = "POST",
                          headers = headers{ "Content-Type: application/json" },
                          json = { command = "echo hi", instance_ids = { "kp000001" } } }
    drive(e, req)
    local res = assert(req:response())
    assert.equal(200, res.status)
    assert.equal("core-spec", res.request_id)
    assert.equal("0", res.body.error_code)
    assert.equal("hi", res.body.data.cmd_results[1].execute_msg)
    assert.equal(res, req:response()) -- built once
  end)

  it("leaves the host's cjson settings alone", function()
    local cjson = require "cjson"
    cjson.decode_max_depth(3)
    local e = core.engine()
    local req = e:submit{ url = emu.url .. "/_emulator/config" }
    drive(e, req)
    assert.is_table(assert(req:response()).body)
    cjson.decode_max_depth(1000)
  end)

  it("gives JSON null as core.null", function()
    local e = core.engine()
    local req = e:submit{ url = emu.url .. "/v1/instances/sync-command", method = "POST", headers = headers(),
                          json = { command = "ls", instance_ids = { "nobody01" } } }
    drive(e, req)
    local item = assert(req:response()).body.data.cmd_results[1]
    assert.equal(core.null, item.execute_msg)
  end)

  it("keeps a raw body and the decode error when the reply is not JSON", function()
    emu:add_fault{ endpoint = "task", kind = "malformed" }
    local e = core.engine()
    local req = e:submit{ url = emu.url .. "/v1/instances/tasks/abc", headers = headers() }
    drive(e, req)
    local res = assert(req:response())
    assert.is_nil(res.body)
    assert.is_string(res.decode_error)
    assert.is_string(res.raw)
  end)

  it("maps a refused connection to kind 'connect', with sent = false", function()
    local e = core.engine()
    local req = e:submit{ url = "http://127.0.0.1:1/", method = "POST", body = "{}" }
    drive(e, req)
    local res, err = req:response()
    assert.is_nil(res)
    assert.equal("connect", err.kind)
    assert.is_false(err.sent)
  end)

  it("maps a total timeout to kind 'timeout', and a reset to kind 'protocol' with sent = true", function()
    emu:add_fault{ endpoint = "task", kind = "stall", seconds = 2, count = 1 }
    emu:add_fault{ endpoint = "sync-command", kind = "reset", count = 1 }
    local e = core.engine()
    local slow = e:submit{ url = emu.url .. "/v1/instances/tasks/x", headers = headers(), timeout = 300 }
    local reset = e:submit{ url = emu.url .. "/v1/instances/sync-command", method = "POST", headers = headers(),
                            json = { command = "echo 1", instance_ids = { "kp000001" } } }
    drive(e, slow); drive(e, reset)
    local _, err = slow:response()
    assert.equal("timeout", err.kind)
    local _, err2 = reset:response()
    assert.equal("protocol", err2.kind)
    assert.is_true(err2.sent)
  end)

  it("never lets curl resend a POST body by itself", function()
    -- a reset after the command ran, on a reused keep-alive connection: curl
    -- would normally retry on a fresh connection; our body cannot be rewound
    local e = core.engine()
    local warm = e:submit{ url = emu.url .. "/v1/instances/tasks/x", headers = headers() }
    drive(e, warm)
    emu:add_fault{ endpoint = "sync-command", kind = "reset", count = 1 }
    local req = e:submit{ url = emu.url .. "/v1/instances/sync-command", method = "POST", headers = headers(),
                          json = { command = "echo once", instance_ids = { "kp000003" } } }
    drive(e, req)
    assert.is_nil((req:response()))
    local ex = emu:executions()
    assert.equal(1, ex.executions.kp000003["echo once"])
  end)

  it("reuses one keep-alive connection for sequential requests", function()
    local e = core.engine()
    for _ = 1, 20 do
      local req = e:submit{ url = emu.url .. "/v1/instances/tasks/x", headers = headers() }
      drive(e, req)
    end
    assert.equal(1, emu:stats().connections)
  end)

  it("refuses responses larger than max_response", function()
    local e = core.engine()
    local req = e:submit{ url = emu.url .. "/_emulator/config", max_response = 10 }
    drive(e, req)
    local _, err = req:response()
    assert.equal("protocol", err.kind)
    assert.matches("larger than 10 bytes", err.message)
  end)

  it("cancels a request in flight, and survives collecting one", function()
    emu:add_fault{ endpoint = "task", kind = "stall", seconds = 1 }
    local e = core.engine()
    local req = e:submit{ url = emu.url .. "/v1/instances/tasks/x", headers = headers() }
    e:perform()
    req:cancel()
    assert.is_true(req:done())
    assert.equal(0, e:inflight())
    local _, err = req:response()
    assert.equal("cancelled", err.kind)
    e:submit{ url = emu.url .. "/v1/instances/tasks/x", headers = headers() }
    e:perform()
    collectgarbage(); collectgarbage()
    e:close()
    assert.equal("koophone.engine (closed)", tostring(e))
    assert.has_error(function() e:perform() end, "koophone engine is closed")
    e:close() -- twice is fine
  end)

  it("checks its arguments at the boundary", function()
    local e = core.engine()
    assert.has_error(function() e:submit{} end, "request field 'url' is required")
    assert.has_error(function() e:submit{ url = "http://x", timeout = "soon" } end,
      "request field 'timeout' must be a number (ms, 0: none), got string")
    assert.has_error(function() e:submit{ url = "http://x", headers = { 1 } } end)
    assert.has_error(function() core.engine{ pool = -1 } end,
      "engine option 'pool' must be a number from 0 to 1000000 (idle easy handles kept), got -1")
  end)

  it("checks id lists in one pass: type, empty, length, characters, duplicates", function()
    assert.is_nil(core.check_ids({ "kp000001", "kp000002" }, 2, 32))
    assert.same({ 2, "type" }, { core.check_ids({ "a", 5 }, 2, 32) })
    assert.same({ 1, "empty" }, { core.check_ids({ "" }, 1, 32) })
    assert.same({ 1, "length" }, { core.check_ids({ ("x"):rep(33) }, 1, 32) })
    assert.same({ 2, "char" }, { core.check_ids({ "a", "b c" }, 2, 32) })
    assert.same({ 1, "char" }, { core.check_ids({ "a\0b" }, 1, 32) })
    assert.same({ 3, "duplicate", 1 }, { core.check_ids({ "a", "b", "a" }, 3, 32) })
    -- the duplicate check, up to 64 ids (a hash on the C stack) and above (a table)
    for _, n in ipairs { 2, 33, 64, 65, 200 } do
      local ids = {}
      for i = 1, n do ids[i] = ("kp%06d"):format(i * 7919 % 1000003) end
      assert.is_nil(core.check_ids(ids, n, 32))
      local first = math.floor(n * 3 / 4)
      ids[n] = ids[first]
      assert.same({ n, "duplicate", first }, { core.check_ids(ids, n, 32) })
      ids[n] = ids[first] .. "x"
      assert.is_nil(core.check_ids(ids, n, 32))
    end
    assert.same({ 0, "map" }, { core.check_ids({ "a", "b", x = 1 }, 2, 32) })
  end)

  it("builds a result row holding only the fields given, in a table sized for them", function()
    local row = core.row("kp1", "instance_id", "ok", 2, "13", nil, nil, "j1", nil, "r1", 1, 0.5)
    assert.same({ id = "kp1", instance_id = "kp1", status = "ok", vendor_status = 2, output = "13",
                  job_id = "j1", request_id = "r1", attempts = 1, elapsed = 0.5 }, row)
    assert.same({ id = "ph1", phone_id = "ph1", status = "failed", polls = 3 },
                core.row("ph1", "phone_id", "failed", nil, nil, nil, nil, nil, nil, nil, nil, nil, 3))
    -- 1,000 rows of 8 fields take what 1,000 tables of 8 slots take (a
    -- constructor naming all 13 fields took 16 slots each: twice that)
    local function kb_of(make)
      collectgarbage() collectgarbage("stop")
      local before, keep = collectgarbage("count"), {}
      for i = 1, 1000 do keep[i] = make(i) end
      local kb = collectgarbage("count") - before
      collectgarbage("restart")
      assert(#keep == 1000) -- all of them were alive while measured
      return kb
    end
    local rows_kb = kb_of(function() return core.row("kp1", "instance_id", "ok", 2, "x", nil, nil, nil, nil, "r", 1, 0.5) end)
    local eight_kb = kb_of(function()
      return { id = "kp1", instance_id = "kp1", status = "ok", vendor_status = 2, output = "x", request_id = "r",
               attempts = 1, elapsed = 0.5 }
    end)
    assert.is_true(rows_kb <= eight_kb * 1.05, ("%.0f KB for 1,000 rows, %.0f KB for 8-slot tables"):format(rows_kb, eight_kb))
    -- and the rows of vendor items are built by it
    local rows = require "koophone.rows"
    local item, extra = { instance_id = "kp1", status = 2, execute_msg = "x" }, { request_id = "r", attempts = 1, elapsed = 0.5 }
    local item_kb = kb_of(function() return rows.from_item("kp1", "instance_id", item, extra) end)
    assert.is_true(item_kb <= eight_kb * 1.05, ("%.0f KB for 1,000 rows.from_item rows"):format(item_kb))
  end)

  it("encodes a request's json byte for byte as cjson does, plain ones without it", function()
    local cjson = require("cjson").new()
    local cases = {
      { command = "ls -l /system", instance_ids = { "kp000001", "a44uhlf7" } },
      { a = "\0\31\127\128é\"\\/", [""] = true, b = false, c = {}, d = { {}, { x = "y" } } },
      { "x", "y" }, {}, "text", true,
    }
    for _, v in ipairs(cases) do
      assert.equal(cjson.encode(v), core.json_encode(v, true))
    end
    -- what the fast path leaves to cjson: the same text, or cjson's error
    for _, v in ipairs { { 1, 2.5 }, { [1] = "a", [3] = "b" }, { [1] = "a", x = "b" }, { [2] = "x" },
                         { a = core.null }, setmetatable({}, {}) } do
      assert.is_nil(core.json_encode(v, true))
      assert.equal(cjson.encode(v), core.json_encode(v))
    end
    local _, err = core.json_encode({ [1] = "a", [40] = "b" })
    assert.matches("excessively sparse array", err)
    _, err = core.json_encode({ f = print })
    assert.matches("Cannot serialise", err)
  end)

  it("makes random UUID v4 request ids", function()
    local e = core.engine()
    local a, b = e:uuid(), e:uuid()
    assert.matches("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$", a)
    assert.not_equal(a, b)
  end)

  it("exposes what an external loop must watch", function()
    local e = core.engine()
    assert.equal(-1, e:timeout())
    local req = e:submit{ url = emu.url .. "/_emulator/health" }
    e:perform()
    local r, w = e:fds()
    assert.is_table(r); assert.is_table(w)
    assert.is_true(#r + #w >= 0)
    drive(e, req)
  end)
end)
