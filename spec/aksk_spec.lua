-- AK/SK request signing (SDK-HMAC-SHA256), clock skew, regions and project
-- lookup — the vendor's test vectors, then the client against the
-- emulator, which checks signatures with its own implementation.
-- Run: lua5.4 /usr/bin/busted spec/aksk_spec.lua
local core = require "koophone.core"
local koophone = require "koophone"
local batch = require "koophone.batch"
local emulator = require "spec.support.emulator"

local q = emulator.shell_quote
local AK, SK = "spec-ak-0001", "spec-sk-Very-Secret-9f3a71"
local TMP_AK, TMP_SK, TMP_TOKEN = "spec-temp-ak", "spec-temp-sk-5c1d2e", "spec-security-token-77aa"

local function authz_signature(lines)
  for _, l in ipairs(lines) do
    local sig = l:match("^Authorization: .*Signature=(%x+)$")
    if sig then return sig, l end
  end
end

describe("core.sign", function()
  it("gives the Java SDK's signature for its test vector", function()
    local lines = core.sign {
      method = "GET", ak = "AccessKey", sk = "SecretKey", date = "20191115T033655Z",
      url = "https://service.region.example.com/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs"
        .. "?limit=2&marker=13551d6b-755d-4757-b956-536f674975c0",
    }
    local sig, line = authz_signature(lines)
    assert.equal("fd95e7da6f695cfb4cabbb9d6b0968aec155bc576b064835282473539ae9ea1d", sig)
    assert.equal("Authorization: SDK-HMAC-SHA256 Access=AccessKey, SignedHeaders=host;x-sdk-date, Signature=" .. sig, line)
    assert.equal("X-Sdk-Date: 20191115T033655Z", lines[1])
  end)

  it("gives the vendor's Python signer's signature for a KooPhone request", function()
    local lines, creq = core.sign {
      method = "POST", url = "https://koophone.myhuaweicloud.com/v1/instances/sync-command",
      body = '{"command":"ls","instance_ids":["abc123"]}', ak = "AccessKey", sk = "SecretKey",
      date = "20191115T033655Z",
      headers = { ["Content-Type"] = "application/json", ["X-Project-Id"] = "0123456789abcdef0123456789abcdef" },
    }
    assert.equal("7e5d405d9942f0111110e651f5004d0a6fa9bda3869be5ec53b0dcddac212aba", (authz_signature(lines)))
    assert.matches("SignedHeaders=content-type;host;x-project-id;x-sdk-date,", lines[2], 1, true)
    -- the canonical request: URI ends in '/', a blank line after the headers
    assert.equal("POST\n/v1/instances/sync-command/\n\ncontent-type:application/json\n"
      .. "host:koophone.myhuaweicloud.com\nx-project-id:0123456789abcdef0123456789abcdef\n"
      .. "x-sdk-date:20191115T033655Z\n\ncontent-type;host;x-project-id;x-sdk-date\n", creq:sub(1, -65))
  end)

  it("percent-encodes path and query as the SDKs do, query sorted", function()
    local _, creq = core.sign {
      method = "get", url = "http://127.0.0.1:8080/v1/a%20b/c*d?z=1&b=x%2Fy&a=hello world&a=%2A",
      ak = "a", sk = "s", date = 0,
    }
    local parts = {}
    for line in (creq .. "\n"):gmatch("(.-)\n") do parts[#parts + 1] = line end
    assert.equal("GET", parts[1])
    assert.equal("/v1/a%20b/c%2Ad/", parts[2])
    assert.equal("a=%2A&a=hello%20world&b=x%2Fy&z=1", parts[3])
    assert.equal("host:127.0.0.1:8080", parts[4])           -- the port, as the URL has one
    assert.equal("x-sdk-date:19700101T000000Z", parts[5])   -- Unix seconds, formatted in UTC
  end)

  it("signs x-security-token for temporary credentials", function()
    local lines = core.sign { method = "GET", url = "https://h/", ak = "a", sk = "s", security_token = "tok" }
    assert.equal("X-Security-Token: tok", lines[2])
    assert.matches("SignedHeaders=host;x-sdk-date;x-security-token,", lines[3], 1, true)
    assert.matches("^X%-Sdk%-Date: %d%d%d%d%d%d%d%dT%d%d%d%d%d%dZ$", lines[1])
  end)

  it("refuses bad input at the boundary", function()
    assert.has_error(function() core.sign { method = "GET", url = "https://h/", ak = "a", sk = "" } end)
    assert.has_error(function() core.sign { method = "GET", url = "nohost", ak = "a", sk = "s" } end)
    assert.has_error(function() core.sign { method = "GET", url = "https://h/", ak = "a", sk = "s", date = "2019" } end)
    assert.has_error(function()
      core.sign { method = "GET", url = "https://h/", ak = "a", sk = "s", headers = { ["X-A"] = "1\r\nX-B: 2" } }
    end)
    assert.has_error(function()
      core.sign { method = "GET", url = "https://h/", ak = "a", sk = "s", headers = { ["x-a"] = "1", ["X-A"] = "2" } }
    end)
  end)
end)

describe("AK/SK against the emulator", function()
  local emu

  setup(function()
    emu = emulator.start { scenario = {
      durations = { default = 0.05, restart = 0.05 }, project_name = "cn-north-4",
      aksk = { { ak = AK, sk = SK }, { ak = TMP_AK, sk = TMP_SK, security_token = TMP_TOKEN } },
    } }
  end)
  teardown(function() emu:stop() end)
  before_each(function() emu:reset() end)

  local function client(extra)
    local opts = { endpoint = emu.url, cph_endpoint = emu.url, project_id = emu.project_id,
                   ak = AK, sk = SK, poll_interval = 0.05, retry_base = 0.01 }
    for k, v in pairs(extra or {}) do opts[k] = v end
    if opts.project_id == false then opts.project_id = nil end
    return assert(koophone.new(opts))
  end

  local function aksk_stats() return emu:stats().aksk end

  it("signs every request: the emulator verifies each one", function()
    local c = client()
    local rows = assert(c:sync_command("echo hi", { "kp000001" }))
    assert.equal("ok", rows[1].status)
    assert.equal("hi", rows[1].output)
    local task = assert(c:restart_phones({ "ph000001" }))
    assert(task:wait())
    local reqs = emu:requests().requests
    assert.is_true(#reqs >= 3)
    for _, r in ipairs(reqs) do
      assert.matches("^SDK%-HMAC%-SHA256 Access=" .. AK:gsub("%-", "%%-") .. ", SignedHeaders=", r.headers.authorization)
      assert.matches("x-project-id;x-sdk-date", r.headers.authorization, 1, true)
      assert.is_nil(r.headers["x-auth-token"])
      assert.equal(emu.project_id, r.headers["x-project-id"])
    end
    assert.same({ ok = #reqs, failed = 0, expired = 0 }, aksk_stats())
  end)

  it("signs over TLS and HTTP/2 too (host from :authority)", function()
    local tls = emulator.start { tls = true, scenario = { aksk = { { ak = AK, sk = SK } } } }
    local c = assert(koophone.new { endpoint = tls.url, ca_file = tls.cert, http_version = "2", ak = AK, sk = SK,
                                    project_id = tls.project_id })
    local rows, msg = c:sync_command("echo hi", { "kp000001" })
    local stats = tls:stats().aksk
    tls:stop()
    assert(rows, msg)
    assert.equal("ok", rows[1].status)
    assert.same({ ok = 1, failed = 0, expired = 0 }, stats)
  end)

  it("signs each attempt afresh, retries included", function()
    local c = client()
    local signed = 0
    local orig = c.auth.headers
    c.auth.headers = function(...) signed = signed + 1; return orig(...) end
    emu:add_fault { endpoint = "sync-command", kind = "503", count = 1, retry_after = 0 }
    local rows = assert(c:sync_command("echo hi", { "kp000002" }))
    assert.equal("ok", rows[1].status)
    assert.equal(2, signed)
    assert.equal(2, #emu:requests { endpoint = "sync-command" }.requests)
    assert.equal(1, aksk_stats().ok)
  end)

  it("runs a signed batch of 1,000 instances with no signature failure", function()
    local c = client { max_connections = 8 }
    local ids = {}
    for i = 1, 1000 do ids[i] = ("kp%06d"):format(i) end
    local report = assert(batch.run(c, "echo hi", ids, { concurrency = 8 }))
    assert.is_true(report:all_ok())
    local s = aksk_stats()
    assert.equal(0, s.failed)
    assert.equal(0, s.expired)
    assert.equal(emu:stats().requests, s.ok)
    assert.is_true(s.ok >= 10) -- 10 submits of 100, and their polls
  end)

  it("recovers from a clock 20 minutes off with exactly one extra request", function()
    emu:config { clock_offset = 1200 }
    local c = client()
    local rows = c:sync_command("echo hi", { "kp000003" })
    emu:config { clock_offset = 0 }
    assert.equal("ok", rows[1].status)
    assert.equal(2, emu:stats().requests)
    assert.same({ ok = 1, failed = 0, expired = 1 }, aksk_stats())
    assert.is_true(math.abs(c.auth.clock_offset - 1200) <= 2)
  end)

  it("keeps the correction: later requests are signed on the server's time", function()
    emu:config { clock_offset = -1500 }
    local c = client()
    assert(c:sync_command("echo hi", { "kp000004" }))
    assert(c:sync_command("echo hi", { "kp000004" }))
    emu:config { clock_offset = 0 }
    assert.equal(3, emu:stats().requests)
    assert.same({ ok = 2, failed = 0, expired = 1 }, aksk_stats())
  end)

  it("gives a wrong SK a clear error, sent once and never retried", function()
    local c = client { sk = "not-the-secret-key-123" }
    local rows, msg, err = c:sync_command("echo hi", { "kp000005" })
    assert.is_nil(rows)
    assert.equal(401, err.http_status)
    assert.equal("APIGW.0301", err.code)
    assert.is_false(err.retryable)
    assert.matches("the AK/SK or its signature was refused", tostring(err), 1, true)
    assert.matches("verify aksk signature fail", tostring(err), 1, true)
    assert.equal(tostring(err), msg)
    assert.is_nil(msg:find("not-the-secret-key-123", 1, true))
    assert.equal(1, emu:stats().requests)
    -- a GET (retryable in general) is not retried either
    local _, _, gerr = c:query_task("ZGCAnosuchtask")
    assert.equal("APIGW.0301", gerr.code)
    assert.equal(2, emu:stats().requests)
    assert.same({ ok = 0, failed = 2, expired = 0 }, aksk_stats())
  end)

  it("refuses an unknown AK, a stale date and a missing signed header (emulator)", function()
    local path = "/v1/instances/tasks/ZGCAx"
    local function signed(opts)
      local lines = core.sign { method = "GET", url = emu.url .. path, ak = opts.ak or AK, sk = SK,
                                date = opts.date, headers = opts.headers }
      local h = { ["X-Auth-Token"] = false }
      for _, l in ipairs(lines) do
        local k, v = l:match("^([^:]+): (.*)$")
        h[k] = v
      end
      return h
    end
    local status, body = emu:call("GET", path, nil, signed { ak = "nobody" })
    assert.equal(401, status)
    assert.equal("APIGW.0301", body.error_code)
    status, body = emu:call("GET", path, nil, signed { date = os.time() - 16 * 60 })
    assert.equal(401, status)
    assert.matches("signature expired, signature time: %d+T%d+Z, server time: %d+T%d+Z", body.error_msg)
    status, body = emu:call("GET", path, nil, signed { headers = { ["X-Project-Id"] = emu.project_id } })
    assert.equal(401, status) -- signed, but not sent
    assert.matches("x-project-id", body.error_msg, 1, true)
    status, body = emu:call("GET", path, nil, signed { date = os.time() - 14 * 60 })
    assert.not_equal(401, status) -- accepted (then: no such task)
    assert.not_equal("APIGW.0301", body.error_code)
  end)

  it("signs x-security-token for temporary credentials", function()
    local c = client { ak = TMP_AK, sk = TMP_SK, security_token = TMP_TOKEN }
    assert(c:sync_command("echo hi", { "kp000006" }))
    local r = emu:requests().requests[1]
    assert.matches("x-sdk-date;x-security-token,", r.headers.authorization, 1, true)
    local c2 = client { ak = TMP_AK, sk = TMP_SK }
    local _, _, err = c2:sync_command("echo hi", { "kp000006" })
    assert.equal("APIGW.0301", err.code)
    assert.is_nil(tostring(c):find(TMP_SK, 1, true))
  end)

  it("resolves a region's endpoints; explicit endpoints win; unknown regions are refused", function()
    local c = assert(koophone.new { region = "cn-north-4", ak = AK, sk = SK })
    assert.equal("https://koophone.myhuaweicloud.com", c.endpoint)
    assert.equal("https://cph.cn-north-4.myhuaweicloud.com", c.cph_endpoint)
    assert.equal("https://iam.cn-north-4.myhuaweicloud.com", c.iam_endpoint)
    c = assert(koophone.new { region = "cn-south-1", ak = AK, sk = SK, cph_endpoint = emu.url, endpoint = emu.url })
    assert.equal(emu.url, c.cph_endpoint)
    assert.equal(emu.url, c.endpoint)
    local none, _, err = koophone.new { region = "eu-nowhere-1", ak = AK, sk = SK }
    assert.is_nil(none)
    assert.equal("validation", err.kind)
    assert.equal("region", err.field)
    assert.matches("known: af-north-1, ap-southeast-1,", err.message, 1, true)
    assert.matches("cn-north-4", err.message, 1, true)
    none, _, err = koophone.new { ak = AK }
    assert.is_nil(none)
    assert.equal("sk", err.field)
  end)

  it("finds the project id of the region in IAM, signed, once", function()
    local c = client { project_id = false, region = "cn-north-4", iam_endpoint = emu.url }
    local task = assert(c:restart_phones({ "ph000002" }))
    assert(task:wait())
    assert(c:sync_command("echo hi", { "kp000007" }))
    assert.equal(emu.project_id, c.project_id)
    local looked = emu:requests { endpoint = "projects" }.requests
    assert.equal(1, #looked)
    assert.equal("/v3/projects?name=cn-north-4", looked[1].path)
    assert.matches("SignedHeaders=host;x-sdk-date,", looked[1].headers.authorization, 1, true)
    assert.equal(0, aksk_stats().failed)
    -- a region without a project of its name: a clear error
    local c2 = client { project_id = false, region = "cn-south-1", iam_endpoint = emu.url }
    local _, _, err = c2:restart_phones({ "ph000002" })
    assert.equal("project_id", err.field)
    assert.matches("no project named after the region", err.message, 1, true)
  end)

  it("never shows the SK: report, journal, progress, errors, CLI output", function()
    local journal = os.tmpname()
    local seen = {}
    local function keep(s) seen[#seen + 1] = tostring(s) end
    local c = client()
    local ids = {}
    for i = 1, 300 do ids[i] = ("kp%06d"):format(i) end
    ids[301] = "nosuch-instance"
    local report = assert(batch.run(c, "echo hi", ids, {
      journal = journal, on_progress = function(p)
        for k, v in pairs(p) do keep(k); keep(v) end
      end,
    }))
    keep(report); keep(report:to_json()); keep(report:to_csv()); keep(report:to_table()); keep(c); keep(c.auth)
    -- and a run where every request is refused
    local bad = client { sk = SK .. "-wrong" }
    local r2 = batch.run(bad, "echo hi", { "kp000001", "kp000002" }, {})
    keep(r2); keep(r2:to_json())
    local _, msg, err = bad:sync_command("echo hi", { "kp000001" })
    keep(msg); keep(err); keep(err.message)
    local f = io.open(journal, "rb")
    keep(f:read("*a")); f:close()
    os.remove(journal)
    -- the CLI: AK/SK from the environment, every output captured
    local cli = q(emulator.repo .. "/bin/koophone")
    local env = ("KOOPHONE_TOKEN= KOOPHONE_ENDPOINT=%s KOOPHONE_CPH_ENDPOINT=%s KOOPHONE_PROJECT_ID=%s "
      .. "HUAWEICLOUD_SDK_AK=%s HUAWEICLOUD_SDK_SK=%s KOOPHONE_POLL_INTERVAL=0.05")
      :format(q(emu.url), q(emu.url), q(emu.project_id), q(AK), q(SK))
    local j2 = os.tmpname()
    for _, fmt in ipairs { "table", "json", "csv" } do
      local out, rc = emulator.run(env .. " " .. cli .. " --format " .. fmt .. " --journal " .. q(j2)
        .. " run 'echo hi' kp000001 kp000002 nosuch 2>&1")
      assert.equal(1, rc) -- nosuch fails: the rest ran, signed
      assert.matches("kp000001", out)
      keep(out)
      os.remove(j2)
    end
    local out = emulator.run(env:gsub("HUAWEICLOUD_SDK_SK=%S+", "HUAWEICLOUD_SDK_SK=" .. q(SK .. "x"))
      .. " " .. cli .. " run 'echo hi' kp000001 2>&1")
    assert.matches("APIGW.0301", out, 1, true)
    keep(out)
    for _, s in ipairs(seen) do
      assert.is_nil(s:find(SK, 1, true), "the SK shows in: " .. s:sub(1, 200))
    end
    assert.is_true(#seen > 20)
  end)

  it("takes AK/SK from the environment or a config file, never from a flag", function()
    local cli = q(emulator.repo .. "/bin/koophone")
    local base = ("KOOPHONE_TOKEN= KOOPHONE_ENDPOINT=%s KOOPHONE_PROJECT_ID=%s"):format(q(emu.url), q(emu.project_id))
    local out, rc = emulator.run(base .. " " .. cli .. " --sk " .. q(SK) .. " run 'echo hi' kp000001 2>&1")
    assert.equal(2, rc)
    assert.matches("never taken from flags", out)
    local cfg = os.tmpname()
    local f = io.open(cfg, "wb")
    f:write(('{"ak": "%s", "sk": "%s"}'):format(AK, SK)); f:close()
    emulator.run("chmod 600 " .. q(cfg))
    out, rc = emulator.run(base .. " " .. cli .. " --config " .. q(cfg) .. " run --mode sync 'echo hi' kp000001 2>&1")
    os.remove(cfg)
    assert.equal(0, rc, out)
    assert.matches("SDK%-HMAC%-SHA256", emu:requests().requests[1].headers.authorization)
  end)
end)
