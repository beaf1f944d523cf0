-- IAM credentials: the client obtains a token, renews it before it expires
-- and once on a 401, concurrent coroutines share one renewal, and a wrong
-- password is a structured error that never shows the password.
-- Run: lua5.4 /usr/bin/busted spec/auth_spec.lua
local emulator = require "spec.support.emulator"
local koophone = require "koophone"

local PASSWORD = "emulator-password"

local function iam_client(emu, over)
  local iam = { user = "emulator-user", password = PASSWORD, domain = "emulator-domain",
                project_id = emu.project_id, endpoint = emu.url }
  for k, v in pairs(over or {}) do iam[k] = v end
  return koophone.new { iam = iam, endpoint = emu.url, cph_endpoint = emu.url, project_id = emu.project_id }
end

local function token_requests(emu)
  return emu:requests { endpoint = "token" }.count
end

local function statuses(emu, endpoint)
  local c = {}
  for _, r in ipairs(emu:requests { endpoint = endpoint }.requests) do c[r.status] = (c[r.status] or 0) + 1 end
  return c
end

describe("IAM auth", function()
  local emu
  setup(function() emu = emulator.start { scenario = { token_ttl = 2, durations = { default = 0.1 } } } end)
  teardown(function() if emu then emu:stop() end end)
  before_each(function() emu:reset() end)

  it("obtains a token with the IAM credentials and uses it", function()
    local c = assert(iam_client(emu))
    local rows = assert(c:sync_command("echo iam", { "kp000001" }))
    assert.equal("iam", rows[1].output)
    assert.equal(1, token_requests(emu))
    -- the token is cached: a second call asks IAM nothing
    assert(c:sync_command("echo again", { "kp000001" }))
    assert.equal(1, token_requests(emu))
    -- the token sent is the one IAM issued (the emulator only takes valid ones)
    assert.equal(2, statuses(emu, "sync-command")[200])
    c:close()
  end)

  it("renews before expiry (token_ttl 2 s): no request ever meets an expired token", function()
    local c = assert(iam_client(emu))
    local t0 = koophone.now()
    local n = 0
    while koophone.now() - t0 < 5 do
      assert(c:sync_command("echo tick", { "kp000001" }))
      n = n + 1
      require("koophone.sched").sleep(c.engine, 0.1)
    end
    local st = statuses(emu, "sync-command")
    assert.equal(n, st[200])
    assert.is_nil(st[401])                     -- renewed ahead, never refused
    local renewals = token_requests(emu)
    -- 5 s at a renewal every 1.8 s (ttl - ttl/10): 3 or 4 tokens, not one per call
    assert.is_true(renewals >= 3 and renewals <= 4, "token requests: " .. renewals)
    assert.is_true(n > renewals * 3)
    c:close()
  end)

  it("renews once on a 401 and retries the call", function()
    local c = assert(iam_client(emu))
    assert(c:sync_command("echo first", { "kp000001" }))
    -- the server forgets the token (e.g. revoked): simulate with a stale one
    c.auth._token = "MIIEstale-token-refused"
    local rows = assert(c:sync_command("echo after-401", { "kp000001" }))
    assert.equal("after-401", rows[1].output)
    assert.equal(2, token_requests(emu))         -- the first, then one renewal
    local st = statuses(emu, "sync-command")
    assert.equal(1, st[401])
    assert.equal(2, st[200])
    c:close()
  end)

  it("renews only once per call when the new token is refused too", function()
    local c = assert(iam_client(emu))
    assert(c:sync_command("echo first", { "kp000001" }))
    emu:reset()
    -- every token is refused: a different configured token does not make
    -- IAM tokens invalid, so break the auth object's renewal instead: it
    -- hands back a token the server does not know
    local renew = c.auth.renew
    local calls = 0
    c.auth.renew = function(self, stale)
      calls = calls + 1
      local ok, err = renew(self, stale)
      self._token = "MIIEalways-refused-" .. calls
      return ok, err
    end
    c.auth._token = "MIIEstale"
    local rows, _, err = c:sync_command("echo x", { "kp000001" })
    assert.is_nil(rows)
    assert.equal("http", err.kind)
    assert.equal(401, err.http_status)
    assert.equal(1, calls)
    assert.equal(2, statuses(emu, "sync-command")[401])
    c:close()
  end)

  it("shares one renewal between concurrent coroutines", function()
    local c = assert(iam_client(emu))
    local ok = 0
    -- first token: 20 coroutines start at once without a token
    for i = 1, 20 do
      koophone.spawn(function()
        if c:sync_command("echo c", { ("kp%06d"):format(i) }) then ok = ok + 1 end
      end)
    end
    assert(koophone.run(30))
    assert.equal(20, ok)
    assert.equal(1, token_requests(emu))
    -- then all of them meet a 401 with the same stale token
    c.auth._token = "MIIEstale-shared"
    c.auth.renew_at = math.huge
    ok = 0
    for i = 1, 20 do
      koophone.spawn(function()
        if c:sync_command("echo c", { ("kp%06d"):format(i) }) then ok = ok + 1 end
      end)
    end
    assert(koophone.run(30))
    assert.equal(20, ok)
    assert.equal(2, token_requests(emu))
    c:close()
  end)

  it("gives a structured error for a wrong password, without the password", function()
    local secret = "Wrong-Pa55word-xyzzy"
    local c = assert(iam_client(emu, { password = secret }))
    local rows, _, err = c:sync_command("echo x", { "kp000001" })
    assert.is_nil(rows)
    assert.equal("http", err.kind)
    assert.equal(401, err.http_status)
    assert.matches("IAM token request failed", err.message)
    assert.matches("password is wrong", tostring(err))
    assert.is_false(err.retryable)
    for _, s in ipairs { tostring(err), tostring(c), tostring(c.auth), tostring(err.message) } do
      assert.falsy(s:find(secret, 1, true), s)
    end
    -- no command was sent without a token
    assert.equal(0, emu:requests { endpoint = "sync-command" }.count)
    assert.equal(1, token_requests(emu))
    -- the next call tries again (one IAM request per call, no storm)
    c:sync_command("echo x", { "kp000001" })
    assert.equal(2, token_requests(emu))
    c:close()
  end)

  it("reports an unknown project as a structured error", function()
    local c = assert(iam_client(emu, { project_id = "not-the-project" }))
    local rows, _, err = c:sync_command("echo x", { "kp000001" })
    assert.is_nil(rows)
    assert.equal(401, err.http_status)
    assert.matches("project", err.message)
    c:close()
  end)

  it("treats a reply without X-Subject-Token as a protocol error", function()
    emu:add_fault { endpoint = "token", kind = "missing" }
    local c = assert(iam_client(emu))
    local rows, _, err = c:sync_command("echo x", { "kp000001" })
    assert.is_nil(rows)
    assert.equal("protocol", err.kind)
    assert.matches("X%-Subject%-Token", err.message)
    c:close()
  end)
end)
