-- Living under the gateway's rate limit (issue 14, item 6): the adaptive
-- limiter (koophone.ratelimit) on its own against a simulated fixed-window
-- gateway, then batches against the emulator's rate_limit policy (429
-- APIGW.0308 with Retry-After, counted in /_emulator/stats as `throttled`).
local koophone = require "koophone"
local batch = require "koophone.batch"
local ratelimit = require "koophone.ratelimit"
local emulator = require "spec.support.emulator"

-- A gateway as the emulator's: at most `limit` requests in each fixed
-- window of `window` seconds; over it a 429 with Retry-After (>= 1 s).
local function gateway(limit, window)
  local counts = {}
  return function(t)
    local idx = math.floor(t / window)
    counts[idx] = (counts[idx] or 0) + 1
    if counts[idx] <= limit then return false end
    return true, math.max(1, math.ceil((idx + 1) * window - t))
  end
end

-- `workers` clients that always have something to send, each request taking
-- `latency` seconds, for `duration` simulated seconds.
local function simulate(lim, gw, workers, latency, duration)
  local at, tickets = {}, {}
  for i = 1, workers do at[i] = 0 end
  local sent, throttled, ok = 0, 0, 0
  while true do
    local w, t = 1, at[1]
    for i = 2, workers do if at[i] < t then w, t = i, at[i] end end
    if t >= duration then break end
    local wait, ticket = 0, tickets[w]
    tickets[w] = nil
    if not (ticket and lim:valid(ticket, t)) then wait, ticket = lim:acquire(t) end
    if wait > 0 then
      at[w] = t + wait
      tickets[w] = ticket
    else
      sent = sent + 1
      local refused, retry_after = gw(t)
      if refused then throttled = throttled + 1 else ok = ok + 1 end
      lim:response(t + latency, t, refused, retry_after)
      at[w] = t + latency
    end
  end
  return { sent = sent, throttled = throttled, ok = ok }
end

-- where the cubic alone would put the rate at `t`
local function cubic(lim, t)
  local x = t - lim.last_cut - lim.k
  return ratelimit.SCALE * x * x * x + lim.last_max
end

describe("koophone.ratelimit", function()
  it("is off until the first 429: no pacing at all", function()
    local lim = ratelimit.new()
    for i = 1, 10000 do
      assert.equal(0, lim:acquire(i * 1e-4))
      lim:response(i * 1e-4, i * 1e-4, false)
    end
    assert.is_nil(lim:current())
  end)

  it("holds every request until Retry-After, then sends at 0.7 x the rate it had", function()
    local lim = ratelimit.new()
    for i = 1, 200 do -- 200 answers in the first second
      lim:acquire(i / 200)
      lim:response(i / 200, i / 200, false)
    end
    lim:response(1.0, 1.0, true, 1)         -- the budget is spent until t = 2
    -- estimate: 200 successes over 2 s (first request to the end of the pause)
    assert.near(100 * 0.7, lim:current(), 1)
    assert.near(1.0, lim:acquire(1.0), 1e-9)
    assert.near(0.5, lim:acquire(1.5), 1e-9)
    -- at the end of the pause nothing is saved up: turns come 1/70 s apart,
    -- reserved in order; a later 429 voids the turns handed out before it
    assert.equal(0, lim:acquire(2.0))
    local wait, ticket = lim:acquire(2.0)
    assert.near(1 / 70, wait, 1e-3)
    assert.near(2 / 70, (lim:acquire(2.0)), 1e-3)
    assert.is_true(lim:valid(ticket, 2.0 + wait))
    lim:response(2.01, 2.0, true, 1)
    assert.is_false(lim:valid(ticket, 3.5))
  end)

  it("cuts once per episode: the 429s of requests sent before the cut only hold the pause", function()
    local lim = ratelimit.new()
    for i = 1, 100 do lim:acquire(i / 100); lim:response(i / 100, i / 100, false) end
    lim:response(1.00, 0.99, true, 1)
    local rate = lim:current()
    for k = 1, 15 do lim:response(1.0 + k * 1e-3, 0.99, true, 1) end -- in flight with it
    assert.equal(rate, lim:current())
    assert.equal(1, lim.cuts)
    assert.equal(16, lim.throttled)
    -- a request sent after the cut that is refused again: a new cut
    lim:response(2.6, 2.5, true, 1)
    assert.equal(2, lim.cuts)
    -- cut from the lower of the rate and the measured answer rate (AWS's rule)
    assert.is_true(lim:current() <= rate * 0.7 + 1e-6)
  end)

  it("raises the rate slowly along the cubic, and never past twice the measured rate", function()
    local lim = ratelimit.new()
    for i = 1, 300 do lim:acquire(i / 300); lim:response(i / 300, i / 300, false) end
    lim:response(1.0, 1.0, true, 1)
    local w = lim.last_max
    local k = lim.k
    assert.near((w * 0.3 / 0.4) ^ (1 / 3), k, 1e-9)
    -- steady successes at the current rate: the rate climbs back to w at K
    local t, r = 2.0, lim:current()
    while t < 2.0 + k do
      t = t + lim:acquire(t) -- one sender, each turn taken
      lim:response(t, t, false)
      assert.is_true(lim:current() >= r - 1e-9, "never lowered by a success")
      r = lim:current()
    end
    assert.near(w, r, w * 0.05)
    -- an idle client: its allowance does not grow with the idle time (the
    -- cubic would be far above w by now; twice the measured rate is not)
    lim:response(60, 59.9, false)
    lim:response(61, 60.9, false)
    assert.is_true(cubic(lim, 61) > 10 * w)
    assert.is_true(lim:current() <= r + 1e-9)
  end)

  it("keeps a greedy client under a fixed-window gateway with few 429s and most of the budget", function()
    -- 16 workers that could send 3,200 requests a second, 200 allowed per second
    local lim = ratelimit.new()
    local s = simulate(lim, gateway(200, 1), 16, 0.005, 120)
    local share = s.throttled / s.sent
    assert.is_true(share < 0.02, ("429 share %.2f%% (%d of %d)"):format(100 * share, s.throttled, s.sent))
    assert.is_true(s.ok >= 0.7 * 200 * 120, ("%d answered, budget %d"):format(s.ok, 200 * 120))
    -- the same clients without the limiter, honouring nothing: most requests refused
    local off = simulate({ acquire = function() return 0 end, response = function() end }, gateway(200, 1), 16, 0.005, 10)
    assert.is_true(off.throttled / off.sent > 0.5)
  end)
end)

describe("batches under the gateway's rate limit (emulator)", function()
  local APP = { fast_install = "1", object_name = "com.example.game", file_name = "game.apk",
                object_version = "3.0", object_size = "12", install_package_url = "https://obs.example.com/game.apk" }

  it("roll out to 10,000 instances under '200 per 5 minutes' (scaled to 200 per 2 s): all ok, under 5 % 429", function()
    -- install jobs of 6 s (0 -> 1 -> 2, the SDK's install statuses) polled
    -- every 0.1 s at first: the batch wants far more than 100 requests a second
    local emu = emulator.start{ scenario = { vendor = "sdk", durations = { install = 6 },
                                             rate_limit = { limit = 200, window = 2 } } }
    local ok, err = pcall(function()
      local client = assert(koophone.new{ token = emu.token, endpoint = emu.url, poll_interval = 0.1 })
      local ids = {}
      for i = 1, 10000 do ids[i] = ("kp%06d"):format(i - 1) end
      local max_rate, last_rate = 0, nil
      local rep = assert(batch.install(client, APP, ids, { concurrency = 16, progress_interval = 0.5,
        on_progress = function(p)
          if p.send_rate then
            max_rate = math.max(max_rate, p.send_rate)
            last_rate = p.send_rate
          end
        end }))
      assert.equal(10000, rep.summary.ok, tostring(rep))
      for i, row in ipairs(rep.rows) do
        assert.equal(ids[i], row.id)
        assert.equal("ok", row.status)
        assert.equal(2, row.vendor_status)
      end
      local st = emu:stats()
      assert.is_true(st.throttled >= 1, "the batch never met the limit: the spec proves nothing")
      local share = st.throttled / st.requests
      assert.is_true(share < 0.05, ("429 share %.2f%% (%d of %d)"):format(100 * share, st.throttled, st.requests))
      assert.equal(st.throttled, client.transport.stats.throttled)
      -- it learnt a rate near the budget, and the limiter left with the batch
      assert.is_true(last_rate and last_rate > 30 and max_rate < 300,
        ("send rate %s, max %s"):format(tostring(last_rate), tostring(max_rate)))
      assert.is_nil(client.transport.limiter)
      -- every instance installed exactly once
      local ex = emu:executions()
      assert.equal(10000, ex.total)
      assert.equal(1, ex.max)
    end)
    emu:stop()
    if not ok then error(err, 0) end
  end)

  describe("throttled submits", function()
    local emu, client
    setup(function()
      emu = emulator.start{ scenario = { vendor = "sdk", durations = { default = 0.2, install = 0.3 } } }
      client = assert(koophone.new{ token = emu.token, endpoint = emu.url, poll_interval = 0.05, retries = 0 })
    end)
    teardown(function() emu:stop() end)
    before_each(function() emu:reset() end)

    it("are reported as not executed by single calls (retryable, maybe_executed false)", function()
      emu:add_fault{ endpoint = "async-command", kind = "429", count = 1, retry_after = 0 }
      local task, msg, err = client:async_command("echo x", { "kp000001" })
      assert.is_nil(task)
      assert.equal(429, err.http_status)
      assert.equal("APIGW.0308", err.code)
      assert.is_true(err.retryable)
      assert.is_false(err.maybe_executed)
      assert.matches("(not executed)", msg, 1, true)
      assert.is_nil(emu:executions().executions.kp000001)
    end)

    it("go again in a batch: 0 rows lost, every command run once", function()
      local ids = {}
      for i = 1, 250 do ids[i] = ("kp%06d"):format(i) end
      -- the first two submits are refused (retries = 0: the batch sees them)
      emu:add_fault{ endpoint = "async-command", kind = "429", count = 2, retry_after = 0 }
      local rep = assert(batch.run(client, "echo again", ids, { concurrency = 4 }))
      assert.equal(250, rep.summary.ok, tostring(rep))
      local ex = emu:executions()
      assert.equal(250, ex.total)
      assert.equal(1, ex.max)
      assert.equal(5, emu:requests{ endpoint = "async-command" }.count) -- 3 chunks + 2 refused
    end)

    it("can keep one limiter for every call of a client (adaptive_rate = true)", function()
      local _, _, err = koophone.new{ token = emu.token, endpoint = emu.url, adaptive_rate = "yes" }
      assert.equal("adaptive_rate", err.field)
      local c = assert(koophone.new{ token = emu.token, endpoint = emu.url, adaptive_rate = true })
      assert.is_table(c.transport.limiter)
      emu:config{ rate_limit = { limit = 20, window = 1 } }
      local t0 = koophone.now()
      for i = 1, 60 do assert(c:sync_command("echo " .. i, { "kp000003" })) end
      local st = emu:stats()
      -- 60 calls at 20 a second: at least two windows, one 429 episode or two
      assert.is_true(koophone.now() - t0 >= 1.5)
      assert.is_true(st.throttled <= 4, "throttled " .. st.throttled)
      assert.is_table(c.transport.limiter)
      assert.truthy(c.transport.limiter:current())
      c:close()
    end)
  end)
end)
