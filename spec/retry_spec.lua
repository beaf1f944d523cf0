-- Retries: queries are retried; a command is retried only when it cannot
-- have run. The emulator's execution counts are the proof.
local koophone = require "koophone"
local emulator = require "spec.support.emulator"

describe("retries", function()
  local emu, client
  setup(function()
    emu = emulator.start{ scenario = { durations = { default = 0.1 } } }
    client = assert(koophone.new{ token = emu.token, endpoint = emu.url, poll_interval = 0.05,
                                  retries = 3, retry_base = 0.01, retry_cap = 0.05, timeout = 1 })
  end)
  teardown(function() emu:stop() end)
  before_each(function() emu:reset() end)

  local function runs(id, cmd)
    local e = emu:executions().executions[id]
    return e and e[cmd] or 0
  end

  for _, kind in ipairs { "500", "429", "503", "reset", "truncate", "malformed" } do
    it("retries a task query after a " .. kind, function()
      local task = assert(client:async_command("echo q", { "kp000010" }))
      emu:add_fault{ endpoint = "task", kind = kind, count = 1, retry_after = 0 }
      local rows = assert(task:wait{ timeout = 5, interval = 0.01 })
      assert.equal("ok", rows[1].status)
    end)
  end

  for _, kind in ipairs { "429", "503" } do
    it("resubmits a command refused with " .. kind .. " (it never ran), honouring Retry-After", function()
      emu:add_fault{ endpoint = "sync-command", kind = kind, count = 1, retry_after = 1 }
      local t0 = koophone.now()
      local rows = assert(client:sync_command("echo r", { "kp000011" }))
      assert.equal("ok", rows[1].status)
      assert.equal(2, rows.attempts)
      assert.is_true(koophone.now() - t0 >= 0.9, "waited for Retry-After")
      assert.equal(1, runs("kp000011", "echo r"))
    end)
  end

  for _, kind in ipairs { "500", "reset", "truncate", "malformed", "stall" } do
    it("does not resubmit a command after a " .. kind .. " (it may have run)", function()
      emu:add_fault{ endpoint = "sync-command", kind = kind, count = 1, seconds = 2 }
      local rows, _, err = client:sync_command("echo once", { "kp000012" })
      assert.is_nil(rows)
      assert.equal(1, err.attempts)
      assert.is_false(err.retryable)
      assert.is_true(err.maybe_executed)
      assert.is_true(runs("kp000012", "echo once") <= 1)
      if kind ~= "stall" then -- a stalled request is logged when the stall ends
        assert.equal(1, emu:requests{ endpoint = "sync-command" }.count)
      end
    end)
  end

  it("does not resubmit an async command whose reply was lost", function()
    emu:add_fault{ endpoint = "async-command", kind = "reset", count = 1 }
    local task, _, err = client:async_command("echo lost", { "kp000013" })
    assert.is_nil(task)
    assert.equal("protocol", err.kind)
    assert.equal(1, runs("kp000013", "echo lost"))
  end)

  it("gives up after `retries` and says how many attempts were made", function()
    emu:add_fault{ endpoint = "task", kind = "500" }
    local _, _, err = client:query_task("whatever")
    assert.equal(500, err.http_status)
    assert.equal(4, err.attempts)
    assert.equal(4, emu:requests{ endpoint = "task" }.count)
  end)
end)

describe("transfer limits", function()
  local emu
  setup(function() emu = emulator.start{} end)
  teardown(function() emu:stop() end)

  it("gives up on a body that crawls (low_speed_limit), as a timeout", function()
    emu:add_fault{ endpoint = "task", kind = "slow_body", seconds = 4 }
    local c = assert(koophone.new{ token = emu.token, endpoint = emu.url, retries = 0,
                                   low_speed_limit = 100000, low_speed_time = 1 })
    local t0 = koophone.now()
    local _, _, err = c:query_task("anything")
    assert.equal("timeout", err.kind)
    assert.is_true(koophone.now() - t0 < 3.5)
  end)

  it("refuses a bad low_speed_limit", function()
    local c, _, err = koophone.new{ token = "t", low_speed_limit = 0 }
    assert.is_nil(c)
    assert.equal("low_speed_limit", err.field)
  end)
end)
