-- koophone.batch: one operation on a whole fleet. Chunks of 32 (sync) or
-- 100 (async, install), a limit on requests in flight, an optional rate,
-- a report that lists every id exactly once whatever goes wrong on the wire,
-- and no command ever run twice.
-- Run: lua5.4 /usr/bin/busted spec/batch_spec.lua
local emulator = require "spec.support.emulator"
local koophone = require "koophone"
local batch = require "koophone.batch"

local function ids(n, fmt, from)
  local t = {}
  for i = from or 0, (from or 0) + n - 1 do t[#t + 1] = string.format(fmt or "kp%06d", i) end
  return t
end

-- ids per request, by the key rows of one request share
local function group_sizes(report, key)
  local seen, order = {}, {}
  for _, row in ipairs(report.rows) do
    local k = row[key]
    if not seen[k] then seen[k] = 0; order[#order + 1] = k end
    seen[k] = seen[k] + 1
  end
  local sizes = {}
  for i, k in ipairs(order) do sizes[i] = seen[k] end
  table.sort(sizes, function(a, b) return a > b end)
  return sizes
end

-- every input id exactly once, in input order
local function assert_complete(report, list)
  assert.equal(#list, #report.rows)
  for i, id in ipairs(list) do assert.equal(id, report.rows[i].id) end
  local s = report.summary
  assert.equal(#list, s.ok + s.failed + s.error + s.timeout)
end

local APP = { object_name = "com.example.app", file_name = "example.apk", object_version = "1.0",
              object_size = 12, install_package_url = "https://obs.example.com/example.apk?Signature=s3cr3t" }

describe("koophone.batch", function()
  local emu, client

  setup(function()
    emu = emulator.start { scenario = { durations = { default = 0.2, install = 0.2, restart = 0.2 } } }
    client = assert(koophone.new { token = emu.token, endpoint = emu.url, cph_endpoint = emu.url,
                                   project_id = emu.project_id, poll_interval = 0.1, retry_base = 0.01 })
  end)
  teardown(function()
    if client then client:close() end
    if emu then emu:stop() end
  end)
  before_each(function() emu:reset() end)

  describe("checks its whole input before sending anything", function()
    it("rejects an empty id list, a duplicate (naming both indexes) and a non-string id", function()
      local r, _, err = batch.run(client, "echo hi", {})
      assert.is_nil(r)
      assert.equal("ids", err.field)
      r, _, err = batch.run(client, "echo hi", { "kp000001", "kp000002", "kp000001" })
      assert.is_nil(r)
      assert.equal("ids[3]", err.field)
      assert.matches("ids%[1%]", err.message)
      _, _, err = batch.run(client, "echo hi", { "kp000001", 7 })
      assert.equal("ids[2]", err.field)
      _, _, err = batch.run(client, "echo hi", { "kp000001", "" })
      assert.equal("ids[2]", err.field)
      assert.equal(0, #emu:requests().requests)
    end)

    it("rejects a bad command or app before chunk 1 is sent", function()
      local many = ids(500)
      local r, _, err = batch.run(client, "echo a\nb", many)
      assert.is_nil(r)
      assert.equal("command", err.field)
      r, _, err = batch.install(client, { object_name = "x" }, many)
      assert.is_nil(r)
      assert.equal("validation", err.kind)
      _, _, err = batch.run(client, "echo hi", many, { mode = "fast" })
      assert.equal("mode", err.field)
      _, _, err = batch.run(client, "echo hi", many, { concurrency = 0 })
      assert.equal("concurrency", err.field)
      _, _, err = batch.run(client, "echo hi", many, { mode = "sync", chunk = 33 })
      assert.equal("chunk", err.field)
      assert.equal(0, #emu:requests().requests)
    end)
  end)

  describe("chunks", function()
    for _, n in ipairs { 31, 32, 33 } do
      it("sends " .. n .. " ids in sync mode as requests of at most 32", function()
        emu:reset()
        local list = ids(n)
        local report = assert(batch.run(client, "echo hi", list, { mode = "sync" }))
        assert_complete(report, list)
        assert.equal(n, report.summary.ok)
        local reqs = emu:requests { endpoint = "sync-command" }.requests
        assert.equal(math.ceil(n / 32), #reqs)
        local sizes = group_sizes(report, "request_id")
        assert.same(n == 33 and { 32, 1 } or { n }, sizes)
      end)
    end

    for _, n in ipairs { 99, 100, 101 } do
      it("sends " .. n .. " ids in async mode as requests of at most 100, then polls", function()
        emu:reset()
        local list = ids(n)
        local report = assert(batch.run(client, "echo hi", list))
        assert_complete(report, list)
        assert.equal(n, report.summary.ok)
        assert.equal(math.ceil(n / 100), #emu:requests { endpoint = "async-command" }.requests)
        assert.same(n == 101 and { 100, 1 } or { n }, group_sizes(report, "task_id"))
        assert.is_true(#emu:requests { endpoint = "task" }.requests >= 1)
      end)

      it("installs on " .. n .. " ids in requests of at most 100", function()
        emu:reset()
        local list = ids(n)
        local report = assert(batch.install(client, APP, list))
        assert_complete(report, list)
        assert.equal(n, report.summary.ok)
        assert.equal(math.ceil(n / 100), #emu:requests { endpoint = "install" }.requests)
        assert.same(n == 101 and { 100, 1 } or { n }, group_sizes(report, "task_id"))
      end)
    end

    it("restarts phones in chunks of opts.chunk (default client.max_restart)", function()
      local list = ids(25, "ph%06d")
      list[3] = { phone_id = list[3], property = { mode = "test" } }
      local report = assert(batch.restart(client, list, { chunk = 10 }))
      assert.equal(25, report.summary.ok)
      assert.equal("ph000002", report.rows[3].id)
      assert.equal(3, #emu:requests { endpoint = "restart" }.requests)
      assert.same({ 10, 10, 5 }, group_sizes(report, "request_id"))
    end)
  end)

  it("keeps at most `concurrency` requests in flight, submits and status queries alike", function()
    emu:config { latency = { default = 0.2 } }
    local list = ids(1000)
    local report = assert(batch.run(client, "echo limit", list, { concurrency = 4 }))
    assert_complete(report, list)
    assert.equal(1000, report.summary.ok)
    local stats = emu:stats()
    assert.is_true(stats.peak_inflight <= 4, "peak in flight " .. tostring(stats.peak_inflight))
    assert.is_true(stats.peak_inflight >= 2)
  end)

  it("keeps submits under `rate` per second", function()
    local list = ids(160)
    local report = assert(batch.run(client, "echo rate", list, { mode = "sync", rate = 10 }))
    assert.equal(160, report.summary.ok)
    local reqs = emu:requests { endpoint = "sync-command" }.requests
    assert.equal(5, #reqs)
    assert.is_true(reqs[5].time - reqs[1].time >= 0.35, "5 submits at 10/s take 0.4 s")
  end)

  it("reports progress at a bounded rate, and once at the end", function()
    local calls, last = 0, nil
    local t0 = koophone.now()
    local list = ids(300)
    local report = assert(batch.run(client, "sleep 1", list, {
      progress_interval = 0.25, on_progress = function(p) calls = calls + 1; last = p end }))
    local elapsed = koophone.now() - t0
    assert.equal(300, report.summary.ok)
    assert.is_true(calls >= 2)
    assert.is_true(calls <= elapsed / 0.25 + 2, calls .. " calls in " .. elapsed .. " s")
    assert.same({ 300, 300, 300, 0, 0, 0 }, { last.done, last.total, last.ok, last.failed, last.error, last.timeout })
    assert.equal(0, last.eta)
    assert.is_true(last.rate > 0)
  end)

  it("ends at opts.timeout with status timeout for whatever still runs", function()
    local list = ids(150)
    local t0 = koophone.now()
    local report = assert(batch.run(client, "sleep 5", list, { timeout = 0.6 }))
    assert.is_true(koophone.now() - t0 < 2)
    assert_complete(report, list)
    assert.equal(150, report.summary.timeout)
  end)

  it("runs inside a koophone.spawn coroutine too, beside other work", function()
    local report, other
    koophone.spawn(function() report = assert(batch.run(client, "echo spawned", ids(120))) end)
    koophone.spawn(function() other = assert(client:sync_command("echo side", { "kp009999" })) end)
    koophone.run(30)
    assert.equal(120, report.summary.ok)
    assert.equal("ok", other[1].status)
  end)

  it("starts a fleet-sized batch from a collected heap: what the caller dropped is freed first", function()
    -- the collector is stopped, and sync-command batches pay it no steps:
    -- only the batch's own full collection can free `dropped`
    local dropped = setmetatable({}, { __mode = "v" })
    local from = batch.COLLECT_FROM
    collectgarbage("stop")
    local ok, report = pcall(function()
      batch.COLLECT_FROM = 64
      dropped[1] = assert(batch.run(client, "echo small", ids(63), { mode = "sync" }))
      assert(batch.run(client, "echo small", ids(63), { mode = "sync" }))
      assert.is_table(dropped[1]) -- fewer ids than COLLECT_FROM: no collection
      local big = assert(batch.run(client, "echo big", ids(64), { mode = "sync" }))
      return { big, dropped[1] == nil } -- read before the collector runs again
    end)
    batch.COLLECT_FROM = from
    collectgarbage("restart")
    assert(ok, report)
    assert.equal(64, report[1].summary.ok)
    assert.is_true(report[2], "the dropped report was still there")
  end)

  it("pays the collector for each status reply only from COLLECT_FROM ids: a small batch keeps its CPU", function()
    -- 8 KB of collector work per job listed is a whole cycle on a heap of
    -- a few MB: every status query of a 1,000-instance batch paid one
    local calls, from, real = {}, batch.COLLECT_FROM, collectgarbage
    _G.collectgarbage = function(opt, ...)
      if opt == "step" or opt == "collect" then calls[#calls + 1] = opt end
      return real(opt, ...)
    end
    local ok, err = pcall(function()
      batch.COLLECT_FROM = 150
      assert.equal(100, assert(batch.run(client, "sleep 0.3", ids(100))).summary.ok)
      assert.same({}, calls, "a batch below COLLECT_FROM called the collector")
      assert.equal(200, assert(batch.run(client, "sleep 0.3", ids(200))).summary.ok)
    end)
    _G.collectgarbage, batch.COLLECT_FROM = real, from
    assert(ok, err)
    assert.equal("collect", calls[1])
    assert.is_true(#calls >= 3, "a fleet-sized batch pays a step per status reply (2 tasks)")
    for i = 2, #calls do assert.equal("step", calls[i]) end
  end)

  it("gives each id of a chunk whose submit failed a row with status error", function()
    emu:add_fault { endpoint = "async-command", kind = "500", count = 1 }
    local list = ids(250)
    local report = assert(batch.run(client, "echo chunkfail", list))
    assert_complete(report, list)
    assert.equal(100, report.summary.error)
    assert.equal(150, report.summary.ok)
    for i = 1, 100 do assert.equal("error", report.rows[i].status) end
    assert.equal(1, emu:executions().max)
  end)

  describe("every id exactly once, no command twice, under each fault", function()
    local kinds = { "500", "503", "429", "reset", "stall", "truncate", "malformed", "missing", "wrong_types" }
    for _, kind in ipairs(kinds) do
      it("kind " .. kind .. " on every endpoint (1,000 instances)", function()
        emu:reset()
        emu:add_fault { endpoint = "*", kind = kind, probability = 0.2, retry_after = 0, seconds = 0.2 }
        local list = ids(1000)
        local report = assert(batch.run(client, "echo " .. kind, list, { concurrency = 16, timeout = 20 }))
        emu:clear_faults()
        assert_complete(report, list)
        local x = emu:executions()
        assert.equal(1, x.max)
        assert.is_true(report.summary.ok > 0)
      end)
    end

    it("kind reset in sync mode", function()
      emu:add_fault { endpoint = "sync-command", kind = "reset", probability = 0.3 }
      local list = ids(500)
      local report = assert(batch.run(client, "echo syncreset", list, { mode = "sync" }))
      emu:clear_faults()
      assert_complete(report, list)
      assert.equal(1, emu:executions().max)
      assert.is_true(report.summary.error > 0)
    end)
  end)
end)
