-- Sync-command rows built straight from the reply's bytes (src/cmd_rows.c)
-- are the rows of the reference path (cjson's decode, then core.item_rows
-- or rows.from_results): on generated replies, and on the emulator's
-- replies — normal, in the vendor's other shapes, and faulty — where a
-- client taking the direct path and one kept on the reference path must
-- return the same rows and the same errors.
local koophone = require "koophone"
local core = require "koophone.core"
local rows = require "koophone.rows"
local replies = require "bench.sync_replies"
local emulator = require "spec.support.emulator"

local same = replies.same

local function ids_of(n, first)
  local t = {}
  for i = 1, n do t[i] = ("kp%06d"):format((first or 0) + i - 1) end
  return t
end

-- a W1 reply, as the emulator sends it
local function w1_reply(ids)
  local items = {}
  for i, id in ipairs(ids) do
    items[i] = ('{"error_code":"","status":2,"instance_id":"%s","execute_msg":"12","error_msg":""}'):format(id)
  end
  return '{"error_msg":"ok","error_code":"0","data":{"cmd_results":[' .. table.concat(items, ",") .. "]}}"
end

describe("sync-command rows from the reply's bytes", function()
  it("builds the rows of a plain reply: those of the reference path", function()
    local ids = ids_of(32)
    local body, list = core.sync_reply(w1_reply(ids), ids)
    assert.is_table(list)
    assert.equal(list, body.data.cmd_results)
    assert.same({ error_code = "0", error_msg = "ok" }, { error_code = body.error_code, error_msg = body.error_msg })
    assert.equal(list, rows.finish(list, { request_id = "r-1", attempts = 1, elapsed = 0.25 }))
    assert.same({ id = "kp000000", instance_id = "kp000000", status = "ok", vendor_status = 2, output = "12",
                  request_id = "r-1", attempts = 1, elapsed = 0.25 }, list[1])
    assert.same({ "r-1", 1, 32 }, { list.request_id, list.attempts, #list })
    assert.equal("rows", replies.compare(w1_reply(ids), ids, { request_id = "r-1", attempts = 1, elapsed = 0.25 }))
  end)

  it("keeps failures, nulls, escapes and other keys as the reference path does", function()
    local text = [[{"data":{"cmd_results":[
      {"instance_id":"a44uhlf7","status":-1,"error_code":"CPS.0191","error_msg":"Run command failed.",
       "execute_msg":"ls: cannot access '\/system': No such file\nor \"directory\" \u4e2d"},
      {"status":2,"instance_id":"kp1","execute_msg":null,"job_id":"j-1","extra":{"a":[1,2]},"error_code":""},
      {"instance_id":"kp2","status":2,"status":-1,"error_msg":"first","error_msg":""}]},
      "error_code":"0","error_msg":"ok"}]]
    local ids = { "a44uhlf7", "kp1", "kp2" }
    assert.equal("rows", replies.compare(text, ids, { request_id = "r", attempts = 2, elapsed = 1.5 }))
    local _, list = core.sync_reply(text, ids)
    rows.finish(list, {})
    assert.same({ id = "a44uhlf7", instance_id = "a44uhlf7", status = "failed", vendor_status = -1, code = "CPS.0191",
                  message = "Run command failed.",
                  output = "ls: cannot access '/system': No such file\nor \"directory\" 中" }, list[1])
    assert.same({ id = "kp1", instance_id = "kp1", status = "ok", vendor_status = 2, job_id = "j-1" }, list[2])
    assert.same({ id = "kp2", instance_id = "kp2", status = "failed", vendor_status = -1 }, list[3])
    assert.is_nil(list.request_id)
  end)

  it("leaves every reply that is not plain to the reference path", function()
    local ids = { "kp1", "kp2" }
    local item = '{"instance_id":"%s","status":%s,"execute_msg":%s}'
    local function reply(a, b) return '{"error_code":"0","data":{"cmd_results":[' .. a .. "," .. b .. "]}}" end
    local plain = item:format("kp1", "2", '"x"')
    for _, other in ipairs {
      item:format("kp3", "2", '"x"'),          -- not the id asked for
      item:format("kp2", "1", '"x"'),          -- running
      item:format("kp2", "3", '"x"'),          -- failed, SDK era
      item:format("kp2", '"2"', '"x"'),        -- a status string
      item:format("kp2", "2", "5"),            -- a number as text
      item:format("kp2", "2", "true"),
      item:format("kp2", "2", "{}"),
      '{"status":2,"execute_msg":"x"}',        -- no id
      '{"instance_id":"kp2","execute_msg":"x"}', -- no status
      '{"instance_id":"kp\\u0032","status":2}', -- an id with an escape
      '{"st\\u0061tus":2,"instance_id":"kp2"}', -- a key with an escape
      "null", "[]", '"kp2"',
    } do
      local text = reply(plain, other)
      assert.equal("items", replies.compare(text, ids, { attempts = 1 }), text)
      local _, list = core.sync_reply(text, ids)
      assert.is_nil(list)
    end
    -- the items in another order, one missing, one too many
    local second = item:format("kp2", "2", '"y"')
    for _, text in ipairs { reply(second, plain), '{"data":{"cmd_results":[' .. plain .. "]}}",
                            reply(plain, second):gsub("]}}$", "," .. plain .. "]}}") } do
      assert.equal("items", replies.compare(text, ids, { attempts = 1 }), text)
    end
    -- a later duplicate key replaces the rows: the reply's own value counts
    local dup = '{"data":{"cmd_results":[' .. plain .. "," .. second .. '],"cmd_results":"none"}}'
    assert.equal("items", replies.compare(dup, ids, { attempts = 1 }))
    dup = '{"data":{"cmd_results":[' .. plain .. "," .. second .. ']},"data":{"cmd_results":[]}}'
    assert.equal("items", replies.compare(dup, ids, { attempts = 1 }))
    -- anything the fast path refuses goes to cjson, as before
    assert.is_nil(core.sync_reply(reply(plain, item:format("kp2", "2.0", '"x"')), ids))
    assert.is_nil(core.sync_reply(reply(plain, second) .. "x", ids))
  end)

  it("sizes each row for the fields set later: as small as the reference path's", function()
    local ids = ids_of(32)
    local text = w1_reply(ids)
    local function kb_of(make)
      collectgarbage() collectgarbage("stop")
      local before, keep = collectgarbage("count"), {}
      for i = 1, 200 do keep[i] = make() end
      local kb = collectgarbage("count") - before
      collectgarbage("restart")
      assert(#keep == 200) -- all of them were alive while measured
      return kb
    end
    local cjson = require("cjson").new()
    local items = cjson.decode(text).data.cmd_results
    local direct = kb_of(function()
      local _, list = core.sync_reply(text, ids)
      return rows.finish(list, { request_id = "r", attempts = 1, elapsed = 0.5 })
    end)
    local reference = kb_of(function() return core.item_rows(ids, items, "instance_id", "r", 1, 0.5) end)
    -- the direct path's figure also holds its decoded envelope
    assert.is_true(direct <= reference * 1.1, ("%.0f KB direct, %.0f KB item_rows"):format(direct, reference))
  end)

  it("checks its arguments", function()
    assert.has_error(function() core.sync_reply(nil, {}) end)
    assert.has_error(function() core.sync_reply("{}", "kp1") end)
    assert.same({ {}, 1 }, { core.sync_reply("{}", {}), select("#", core.sync_reply("{}", {})) })
  end)

  it("matches the reference path on 3,000 generated replies", function()
    local seed = tonumber(os.getenv("KOOPHONE_ROWS_SEED") or "") or os.time()
    local gen = replies.generator(seed)
    local seen = { rows = 0, items = 0, gave_up = 0 }
    for _ = 1, 3000 do
      local text, ids, res = gen()
      local ok, how = pcall(replies.compare, text, ids, res)
      assert(ok, ("seed %d: %s"):format(seed, tostring(how)))
      seen[how] = seen[how] + 1
    end
    -- every way is taken
    assert.is_true(seen.rows > 300 and seen.items > 300 and seen.gave_up > 100,
                   ("seed %d: rows %d, items %d, gave up %d"):format(seed, seen.rows, seen.items, seen.gave_up))
  end)
end)

describe("sync_command against the emulator: the same rows with and without the direct path", function()
  local emu, client, reference, direct_used
  setup(function()
    emu = emulator.start { scenario = {
      durations = { default = 0 },
      commands = {
        { match = "^multi", output = "line 1\nline 2\t\"quoted\" /path \\ 中文 é" },
        { match = "^nothing", output = "" },
        { match = "^running", status = 1 },
        { match = "^three", status = 3, error_code = "KOOPHONE.API.62005", error_msg = "exists" },
        { match = "^fails", status = -1, error_code = "CPS.0191", error_msg = "Run command failed." },
      },
      overrides = { kp000003 = { match = "^getprop", status = -1, error_msg = "busy" } },
    } }
    local function new_client()
      return assert(koophone.new { token = emu.token, endpoint = emu.url, retries = 2, retry_base = 0.01,
                                   retry_cap = 0.02, timeout = 2 })
    end
    client, reference = new_client(), new_client()
    -- the emulator's Retry-After is whole seconds: wait at most 20 ms
    client.transport.max_retry_after, reference.transport.max_retry_after = 0.02, 0.02
    -- the client under test: which replies came back as rows
    local t = client.transport
    local request = t.request
    t.request = function(tr, spec)
      local res, err = request(tr, spec)
      if res and res.rows then direct_used = direct_used + 1 end
      return res, err
    end
    -- the reference: never asks for rows
    local rt = reference.transport
    local rrequest = rt.request
    rt.request = function(tr, spec)
      assert.is_table(spec.rows)
      spec.rows = nil
      return rrequest(tr, spec)
    end
  end)
  teardown(function()
    if client then client:close(); reference:close() end
    if emu then emu:stop() end
  end)
  before_each(function()
    emu:reset()
    direct_used = 0
  end)

  local calls = 0
  -- runs the call on both clients (before each, `prepare`: e.g. a fault)
  -- and checks that they agree; returns the direct client's outcome
  local function both(command, ids, prepare)
    calls = calls + 1
    local opts = { request_id = "spec-rows-" .. calls }
    if prepare then prepare() end
    local a, _, aerr = client:sync_command(command, ids, opts)
    if prepare then prepare() end
    local b, _, berr = reference:sync_command(command, ids, opts)
    if a then
      assert.is_table(b, "the reference path failed: " .. tostring(berr))
      for i = 1, #a do
        assert.is_number(a[i].elapsed)
        a[i].elapsed, b[i].elapsed = nil, nil
      end
      assert.is_true(same(a, b), replies.show(a) .. "\n  vs\n" .. replies.show(b))
      return a
    end
    assert.is_nil(b, "the direct path failed: " .. tostring(aerr))
    for _, k in ipairs { "kind", "code", "http_status", "retryable", "maybe_executed", "attempts" } do
      assert.equal(berr[k], aerr[k], k)
    end
    -- a broken connection reads as curl saw it (which can differ run to run)
    if aerr.http_status or aerr.kind == "decode" then assert.equal(berr.message, aerr.message) end
    return nil, aerr
  end

  it("takes the direct path for the usual reply, with the rows of before", function()
    local ids = ids_of(32)
    ids[5], ids[6] = "ghost001", "a44uhlf7"
    local list = both("getprop ro.build.version.release", ids)
    assert.equal(1, direct_used)
    assert.same({ "ok", "12" }, { list[1].status, list[1].output })
    assert.same({ "failed", "busy" }, { list[4].status, list[4].message })
    assert.same({ "failed", "CPS0005" }, { list[5].status, list[5].code })
    assert.equal("spec-rows-" .. calls, list.request_id)
    assert.equal(1, list.attempts)
    for _, cmd in ipairs { "multi", "nothing", "fails", "echo a/b \"q\" 中文", "ls -l /system" } do
      direct_used = 0
      both(cmd, { "kp000001", "a44uhlf7", "kp000002" })
      assert.equal(1, direct_used, cmd)
    end
  end)

  it("leaves other statuses to the reference path", function()
    for _, cmd in ipairs { "running", "three" } do
      local list = both(cmd, ids_of(4))
      assert.equal(0, direct_used)
      assert.equal(cmd == "running" and "running" or "failed", list[1].status)
    end
  end)

  it("gives the same rows and errors in the vendor's other shapes", function()
    for _, vendor in ipairs { "seed", "sdk" } do
      for _, style in ipairs { "error_code", "errorCode", "code", "nested" } do
        emu:config { vendor = vendor, error_style = style }
        both("getprop ro.build.version.release", ids_of(8, 100))
        both("multi", { "kp000001", "ghost002" })
        -- an error reply (the gateway's 429, retried, then given up)
        local _, err = both("echo x", { "kp000001" }, function()
          emu:clear_faults()
          emu:add_fault { endpoint = "sync-command", kind = "429", retry_after = 0.01 }
        end)
        assert.equal(429, err.http_status)
        emu:clear_faults()
      end
    end
    emu:config { vendor = "seed", error_style = "error_code" }
  end)

  it("gives the same rows and errors for faulty replies", function()
    for _, kind in ipairs { "500", "503", "429", "reset", "truncate", "malformed", "missing", "wrong_types",
                            "numeric_code", "slow_body" } do
      for _, count in ipairs { 1, 5 } do -- the first attempt, or every attempt
        direct_used = 0
        local list = both("getprop ro.build.version.release", ids_of(6, 200), function()
          emu:clear_faults()
          emu:add_fault { endpoint = "sync-command", kind = kind, count = count, retry_after = 0.01, seconds = 0.1 }
        end)
        -- a reply that came whole and plain (retried, or still valid) took the direct path
        if kind == "numeric_code" or kind == "slow_body" or (count == 1 and (kind == "503" or kind == "429")) then
          assert.is_table(list, kind)
          assert.equal(1, direct_used, kind)
        end
      end
    end
    emu:clear_faults()
  end)

  it("builds rows only from a 2xx reply, and only when asked", function()
    local engine = core.engine()
    local function post(spec_rows)
      local req = engine:submit { url = emu.url .. "/v1/instances/sync-command",
                                  headers = { "X-Auth-Token: " .. emu.token, "x-request-id: r-1",
                                              "Content-Type: application/json" },
                                  json = { command = "echo x", instance_ids = { "kp000001" } }, rows = spec_rows }
      while not req:done() do engine:wait(50); engine:perform() end
      return assert(req:response())
    end
    emu:add_fault { endpoint = "sync-command", kind = "500", count = 1 }
    local res = post { "kp000001" }
    assert.equal(500, res.status)
    assert.is_nil(res.rows)
    assert.equal("KOOPHONE.API.9999", res.body.error_code)
    res = post { "kp000001" }
    assert.equal(200, res.status)
    assert.equal(res.rows, res.body.data.cmd_results)
    assert.same({ id = "kp000001", instance_id = "kp000001", status = "ok", vendor_status = 2, output = "x" },
                res.rows[1])
    res = post(nil)
    assert.is_nil(res.rows)
    assert.same({ instance_id = "kp000001", status = 2, execute_msg = "x", error_code = "", error_msg = "" },
                res.body.data.cmd_results[1])
    assert.has_error(function() engine:submit { url = emu.url, rows = "kp000001" } end,
                     "request field 'rows' must be a list of ids")
    engine:close()
  end)
end)
