-- luacheck: max line length 260
-- TLS, HTTP/2 and proxies against the emulator started with --tls (a fresh
-- self-signed certificate, HTTP/2 offered through ALPN, HTTP/1.1 too).
-- Run: lua5.4 /usr/bin/busted spec/tls_spec.lua
local emulator = require "spec.support.emulator"
local koophone = require "koophone"
local core = require "koophone.core"

local q = emulator.shell_quote

-- sends `n` sync-commands (one id each) from `conc` coroutines; returns how
-- many succeeded
local function burst(client, n, conc)
  local ok, next_i = 0, 0
  for _ = 1, conc do
    koophone.spawn(function()
      while next_i < n do
        next_i = next_i + 1
        local rows = client:sync_command("echo h2", { ("kp%06d"):format(next_i) })
        if rows and rows[1].status == "ok" then ok = ok + 1 end
      end
    end)
  end
  assert(koophone.run(60))
  return ok
end

describe("TLS", function()
  local emu
  setup(function() emu = emulator.start { tls = true } end)
  teardown(function() if emu then emu:stop() end end)
  before_each(function() emu:reset() end)

  it("refuses a self-signed server by default, with an error of kind tls", function()
    local c = assert(koophone.new { token = emu.token, endpoint = emu.url })
    local rows, _, err = c:sync_command("echo hi", { "kp000001" })
    assert.is_nil(rows)
    assert.equal("tls", err.kind)
    assert.matches("certificate", tostring(err))
    assert.matches("^the TLS handshake or certificate check failed", tostring(err))
    assert.is_false(err.retryable)          -- a POST: never retried after TLS failed
    c:close()
    -- nothing reached the handler
    assert.equal(0, emu:requests().count)
  end)

  it("is not insecure by default", function()
    local c = assert(koophone.new { token = emu.token, endpoint = emu.url })
    assert.is_nil(c.transport.curl.insecure)
    c:close()
  end)

  it("accepts the server with ca_file = its certificate", function()
    local c = assert(koophone.new { token = emu.token, endpoint = emu.url, ca_file = emu.cert })
    local rows = assert(c:sync_command("echo hi", { "kp000001" }))
    assert.equal("ok", rows[1].status)
    assert.equal("hi", rows[1].output)
    c:close()
  end)

  it("reports an unreadable ca_file as a tls error", function()
    local c = assert(koophone.new { token = emu.token, endpoint = emu.url, ca_file = "/nonexistent/ca.pem" })
    local rows, _, err = c:sync_command("echo hi", { "kp000001" })
    assert.is_nil(rows)
    assert.equal("tls", err.kind)
    c:close()
  end)

  it("accepts the server with insecure = true", function()
    local c = assert(koophone.new { token = emu.token, endpoint = emu.url, insecure = true })
    local rows = assert(c:sync_command("echo hi", { "kp000001" }))
    assert.equal("ok", rows[1].status)
    c:close()
  end)

  it("checks the host name: 'localhost' matches the certificate, the CA alone does not make any name valid", function()
    local url = emu.url:gsub("127%.0%.0%.1", "localhost")
    local c = assert(koophone.new { token = emu.token, endpoint = url, ca_file = emu.cert })
    assert.equal("ok", assert(c:sync_command("echo hi", { "kp000001" }))[1].status)
    c:close()
    -- the emulator listens on 127.0.0.1 only, but Linux routes all of
    -- 127/8 to lo: 127.0.0.2 is not in the certificate's SAN
    local c2 = assert(koophone.new { token = emu.token, endpoint = (emu.url:gsub("127%.0%.0%.1", "127.0.0.2")),
                                     ca_file = emu.cert, connect_timeout = 2 })
    local rows, _, err = c2:sync_command("echo hi", { "kp000001" })
    assert.is_nil(rows)
    if err.kind ~= "connect" then assert.equal("tls", err.kind) end
  end)

  it("uses HTTP/2 when offered: 300 requests at concurrency 32 over 1 connection", function()
    local _, has_h2 = core.curl_version()
    if not has_h2 then pending("libcurl without HTTP/2") return end
    local c = assert(koophone.new { token = emu.token, endpoint = emu.url, ca_file = emu.cert })
    assert.equal(300, burst(c, 300, 32))
    local st = emu:stats()
    assert.equal(300, st.requests)
    assert.equal(1, st.connections)
    assert.is_true(st.peak_inflight > 1) -- really multiplexed, not one after another
    c:close()
  end)

  it("forces HTTP/1.1 with http_version = '1.1' (one connection per request in flight)", function()
    local c = assert(koophone.new { token = emu.token, endpoint = emu.url, ca_file = emu.cert,
                                    http_version = "1.1" })
    assert.equal(300, burst(c, 300, 32))
    local st = emu:stats()
    assert.equal(300, st.requests)
    assert.is_true(st.connections > 1, "connections: " .. tostring(st.connections))
    if os.getenv("KOOPHONE_SPEC_VERBOSE") then io.stderr:write("HTTP/1.1 connections: ", st.connections, "\n") end
    assert.is_true(st.connections <= 32 + 2)
    c:close()
  end)

  it("passes the proxy option to curl: a closed proxy port is a connect error naming it", function()
    -- the target does not even resolve: only the proxy is ever contacted
    local c = assert(koophone.new { token = emu.token, endpoint = "https://koophone.invalid",
                                    proxy = "http://127.0.0.1:9", retries = 0, connect_timeout = 3 })
    local rows, _, err = c:sync_command("echo hi", { "kp000001" })
    assert.is_nil(rows)
    assert.equal("connect", err.kind)
    assert.matches("127%.0%.0%.1 port 9", err.message)
    c:close()
    local c2 = assert(koophone.new { token = emu.token, endpoint = "https://koophone.invalid",
                                     proxy = "http://no-such-proxy.invalid:3128", retries = 0 })
    rows, _, err = c2:sync_command("echo hi", { "kp000001" })
    assert.is_nil(rows)
    assert.equal("dns", err.kind)
    assert.matches("proxy", err.message)
    c2:close()
  end)

  it("tunnels through an HTTP CONNECT proxy", function()
    local py = emulator.run("command -v python3")
    if not py:match("python3") then pending("python3 not installed") return end
    local log, portfile = os.tmpname(), os.tmpname()
    local proxy = io.popen("unset LD_PRELOAD; exec python3 " .. q(emulator.repo .. "/spec/support/connect_proxy.py")
                           .. " " .. q(log) .. " >" .. q(portfile), "w")
    local port
    for _ = 1, 100 do
      local f = io.open(portfile)
      port = f and f:read("*l")
      if f then f:close() end
      if port and port:match("^%d+$") then break end
      os.execute("sleep 0.05")
    end
    assert.truthy(port and port:match("^%d+$"), "proxy did not start")
    local c = assert(koophone.new { token = emu.token, endpoint = emu.url, ca_file = emu.cert,
                                    proxy = "http://127.0.0.1:" .. port })
    local rows = assert(c:sync_command("echo via-proxy", { "kp000001" }))
    assert.equal("via-proxy", rows[1].output)
    c:close()
    proxy:close()
    local f = assert(io.open(log))
    local text = f:read("*a")
    f:close()
    os.remove(log); os.remove(portfile)
    assert.matches("CONNECT 127%.0%.0%.1:" .. emu.port, text)
  end)
end)
