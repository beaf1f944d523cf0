-- koophone.report: what a batch returns. One row per input id, a summary,
-- the failures, exports (JSON, CSV, text table) and a retry of the failures.
-- Run: lua5.4 /usr/bin/busted spec/report_spec.lua
local report = require "koophone.report"
local cjson = require "cjson"

local function sample()
  return report.new {
    elapsed = 1.5, requests = 4,
    rows = {
      { id = "kp000001", status = "ok", output = "12" },
      { id = "kp000002", status = "failed", code = "CPS.0191", message = "Run command failed.",
        output = 'say "hi", then\nleave' },
      { id = "kp000003", status = "error", message = "HTTP 500", kind = "http" },
      { id = "kp000004", status = "timeout", message = "still running" },
    },
  }
end

describe("koophone.report", function()
  it("sums up the rows", function()
    local r = sample()
    assert.same({ total = 4, ok = 1, failed = 1, error = 1, timeout = 1, elapsed = 1.5, requests = 4 }, r.summary)
    assert.equal("4 ids: 1 ok, 1 failed, 1 error, 1 timeout in 1.5s (4 requests)", tostring(r))
    assert.is_false(r:all_ok())
  end)

  it("lists the rows that are not ok, in input order", function()
    local f = sample():failed()
    assert.same({ "kp000002", "kp000003", "kp000004" }, { f[1].id, f[2].id, f[3].id })
  end)

  it("exports CSV with a header and RFC 4180 quoting", function()
    local csv = sample():to_csv()
    local lines = {}
    for line in csv:gmatch("(.-)\r\n") do lines[#lines + 1] = line end
    assert.equal(table.concat(report.columns, ","), lines[1])
    -- records end with CRLF; a field with a quote, comma or newline is quoted
    assert.equal('kp000002,failed,,CPS.0191,Run command failed.,"say ""hi"", then\nleave",,,,,,,', lines[3])
    assert.equal(5, #lines)
    assert.equal('"a,b"', report.csv_field("a,b"))
    assert.equal("0.250", report.csv_field(0.25))
  end)

  it("exports JSON with the summary and every row", function()
    local t = cjson.decode(sample():to_json())
    assert.equal(4, t.summary.total)
    assert.equal(4, #t.rows)
    assert.equal("kp000003", t.rows[3].id)
  end)

  it("prints a text table, cutting long cells and control characters", function()
    local text = sample():to_table()
    assert.matches("^id%s+status%s+code%s+message%s+output\n%-%-", text)
    assert.matches('kp000002%s+failed%s+CPS%.0191%s+Run command failed%.%s+say "hi", then leave', text)
    local long = report.new { rows = { { id = "x", status = "ok", output = string.rep("a", 100) } } }
    assert.matches("a%.%.%.\n$", long:to_table())
  end)

  it("merges a retry's rows over the first report's, keeping the order", function()
    local first = sample()
    local retry = report.new { rows = { { id = "kp000003", status = "ok" }, { id = "kp000004", status = "ok" } },
                               elapsed = 0.5, requests = 2 }
    local merged = first:merge(retry)
    assert.same({ "ok", "failed", "ok", "ok" }, { merged.rows[1].status, merged.rows[2].status,
                                                  merged.rows[3].status, merged.rows[4].status })
    assert.equal(3, merged.summary.ok)
    assert.equal(6, merged.summary.requests)
    assert.equal(2.0, merged.summary.elapsed)
  end)

  it("cannot retry a report that has no operation", function()
    local r, _, err = sample():retry_failed()
    assert.is_nil(r)
    assert.equal("validation", err.kind)
  end)

  describe("retry_failed against the emulator", function()
    local emulator = require "spec.support.emulator"
    local koophone = require "koophone"
    local batch = require "koophone.batch"
    local emu, client
    setup(function()
      emu = emulator.start { scenario = { durations = { default = 0.1 } } }
      client = assert(koophone.new { token = emu.token, endpoint = emu.url, project_id = emu.project_id,
                                     poll_interval = 0.1 })
    end)
    teardown(function() client:close(); emu:stop() end)

    it("runs only the ids that were not ok, with the same operation", function()
      local ids = {}
      for i = 0, 149 do ids[#ids + 1] = ("kp%06d"):format(i) end
      emu:add_fault { endpoint = "async-command", kind = "500", count = 1 }
      local first = assert(batch.run(client, "echo again", ids))
      assert.equal(100, first.summary.error)
      -- a 500 after sending: the command may have run, so it is not run
      -- again unless asked
      assert.equal(0, assert(first:retry_failed()).summary.total)
      local retry = assert(first:retry_failed(nil, { include_maybe_executed = true }))
      assert.equal(100, retry.summary.total)
      assert.equal(100, retry.summary.ok)
      local merged = first:merge(retry)
      assert.is_true(merged:all_ok())
      assert.equal(150, #merged.rows)
      local again = assert(first:retry_failed(nil, { merge = true, include_maybe_executed = true }))
      assert.equal(150, again.summary.ok)
      local none = assert(merged:retry_failed())
      assert.equal(0, none.summary.total)
    end)
  end)
end)
