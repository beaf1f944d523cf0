-- luacheck: max line length 260
-- Secrets never leak: a full batch (sync, async, install with a signed URL,
-- restart) through the library and through the CLI, with faults on; every
-- output is captured (reports in every format, journals, error strings,
-- progress, tostring of client/auth/errors/tasks, the CLI's stdout and
-- stderr) and searched for the token, the IAM password and the signed URL's
-- query string.
-- Run: lua5.4 /usr/bin/busted spec/secrets_spec.lua
local emulator = require "spec.support.emulator"
local koophone = require "koophone"
local batch = require "koophone.batch"
local cjson = require "cjson"

local q = emulator.shell_quote
local TOKEN = "tok-SUPERSECRET-4b1d7c0e9a"
local QUERY = "AccessKeyId=AK&Signature=VERYSECRET"
local URL = "https://obs.example.com/bucket/game.apk?" .. QUERY
local NEEDLES = { TOKEN, QUERY, "VERYSECRET", "AccessKeyId", "Signature=", "emulator-password" }

local FAULTS = {
  { endpoint = "sync-command", kind = "500", probability = 0.1 },
  { endpoint = "sync-command", kind = "malformed", probability = 0.1 },
  { endpoint = "async-command", kind = "reset", probability = 0.1 },
  { endpoint = "install", kind = "500", probability = 0.2 },
  { endpoint = "install", kind = "malformed", probability = 0.2 },
  { endpoint = "task", kind = "truncate", probability = 0.1 },
  { endpoint = "task", kind = "503", probability = 0.1, retry_after = 0 },
  { endpoint = "restart", kind = "wrong_types", probability = 0.2 },
  { endpoint = "jobs", kind = "500", probability = 0.1 },
}

local function ids(n, fmt)
  local t = {}
  for i = 1, n do t[i] = (fmt or "kp%06d"):format(i) end
  return t
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

-- every string reachable from v (keys and values), concatenated
local function dump(v, out, seen)
  out, seen = out or {}, seen or {}
  local t = type(v)
  if t == "table" then
    if seen[v] then return out end
    seen[v] = true
    local mt = getmetatable(v)
    if mt and mt.__tostring then out[#out + 1] = tostring(v) end
    for k, x in pairs(v) do dump(k, out, seen); dump(x, out, seen) end
  elseif t == "string" or t == "number" or t == "boolean" then
    out[#out + 1] = tostring(v)
  end
  return out
end

local function assert_clean(label, text)
  for _, needle in ipairs(NEEDLES) do
    local at = text:find(needle, 1, true)
    assert(not at, ("%s leaks %q: ...%s..."):format(label, needle, text:sub(math.max(1, (at or 1) - 60), (at or 1) + 60)))
  end
end

local APP = { object_name = "com.example.game", file_name = "game.apk", object_version = "2.4.1",
              object_size = 120, fast_install = 1, install_package_url = URL }

describe("secrets", function()
  local emu
  setup(function()
    emu = emulator.start { token = TOKEN, scenario = { seed = 7, durations = { default = 0.2 },
                                                       fail_ratio = 0.05 } }
  end)
  teardown(function() if emu then emu:stop() end end)
  before_each(function()
    emu:reset()
    emu:add_fault(FAULTS)
  end)

  it("never appear in anything the library produces", function()
    local captured = {}
    local function keep(label, v) captured[#captured + 1] = { label, table.concat(dump(v), "\n") } end
    local c = assert(koophone.new { token = TOKEN, endpoint = emu.url, cph_endpoint = emu.url,
                                    project_id = emu.project_id, poll_interval = 0.1, retries = 1,
                                    retry_base = 0.01 })
    keep("client", tostring(c)); keep("auth", tostring(c.auth))
    local journal = os.tmpname()
    local progress = {}
    local opts = { journal = journal, concurrency = 8, on_progress = function(p) progress[#progress + 1] = p end,
                   progress_interval = 0.01 }
    local reports = {
      assert(batch.run(c, "echo sync", ids(200), setmetatable({ mode = "sync" }, { __index = opts }))),
      assert(batch.run(c, "getprop ro.serialno", ids(300), opts)),
      assert(batch.install(c, APP, ids(250), opts)),
      assert(batch.restart(c, ids(150, "ph%06d"), opts)),
    }
    local not_ok = 0
    for i, r in ipairs(reports) do
      keep("report " .. i, tostring(r)); keep("json " .. i, r:to_json()); keep("csv " .. i, r:to_csv())
      keep("table " .. i, r:to_table()); keep("rows " .. i, r.rows)
      for _, row in ipairs(r.rows) do if row.status ~= "ok" then not_ok = not_ok + 1 end end
    end
    assert.is_true(not_ok > 0, "the faults produced no failures: the test proves nothing")
    keep("progress", progress)
    keep("journal", read(journal))
    -- resume reads the journal back and reports again
    keep("resume", tostring(assert(batch.resume(c, journal, {}))))
    os.remove(journal)
    -- direct calls, their errors and tasks
    for _ = 1, 10 do
      local t, _, err = c:install_app(APP, { "kp000001", "kp000002" })
      keep("install err", err); keep("install task", t and tostring(t))
      if t then keep("install rows", (t:wait { timeout = 5 })) ; keep("describe", t:describe()) end
    end
    local _, _, verr = c:install_app(setmetatable({ install_package_url = "ftp://x/?" .. QUERY }, { __index = APP }), { "kp1" })
    keep("validation", verr)
    _, _, verr = c:install_app(setmetatable({ install_package_url = URL .. ("x"):rep(2000) }, { __index = APP }), { "kp1" })
    keep("too long", verr)
    _, _, verr = c:install_app(setmetatable({ object_name = "bad\n" .. URL }, { __index = APP }), { "kp1" })
    keep("name with url", verr)
    -- a connection failure's message names the URL it tried
    local dead = assert(koophone.new { token = TOKEN, endpoint = "http://127.0.0.1:9", retries = 0 })
    local _, _, cerr = dead:install_app(APP, { "kp000001" })
    keep("connect error", cerr)
    -- IAM with the password: errors and tostring
    local iam = assert(koophone.new { endpoint = emu.url, iam = { user = "emulator-user",
      password = "emulator-password-wrong", domain = "emulator-domain", project_id = emu.project_id,
      endpoint = emu.url } })
    local _, _, ierr = iam:sync_command("echo x", { "kp000001" })
    keep("iam error", ierr); keep("iam client", tostring(iam)); keep("iam auth", tostring(iam.auth))
    for _, k in ipairs(captured) do
      assert_clean(k[1], k[2])
    end
    c:close(); dead:close(); iam:close()
  end)

  it("never appear in anything the CLI prints or writes", function()
    local cli = q(emulator.repo .. "/bin/koophone")
    local env = ("KOOPHONE_ENDPOINT=%s KOOPHONE_CPH_ENDPOINT=%s KOOPHONE_TOKEN=%s KOOPHONE_PROJECT_ID=%s KOOPHONE_POLL_INTERVAL=0.1")
      :format(q(emu.url), q(emu.url), q(TOKEN), q(emu.project_id)) .. " KOOPHONE_PACKAGE_URL=" .. q(URL)
    local idlist = table.concat(ids(120), " ")
    local phones = table.concat(ids(60, "ph%06d"), " ")
    local runs = {}
    local journals = {}
    for _, fmt in ipairs { "json", "csv", "table" } do
      local j = os.tmpname()
      journals[#journals + 1] = j
      for _, args in ipairs {
        "run --mode sync 'echo s' " .. idlist,
        "run 'getprop ro.serialno' " .. idlist,
        "install --object-name com.example.game --file-name game.apk --object-version 1 --object-size 12 --fast " .. idlist,
        "restart " .. phones,
      } do
        runs[#runs + 1] = ("--format %s --journal %s --concurrency 4 %s"):format(fmt, q(j .. "." .. #runs), args)
        journals[#journals + 1] = j .. "." .. (#runs - 1)
      end
    end
    local outputs = {}
    for i, args in ipairs(runs) do
      local errf = os.tmpname()
      local out, rc = emulator.run(env .. " " .. cli .. " " .. args .. " 2>" .. q(errf))
      outputs[#outputs + 1] = { "stdout " .. i, out }
      outputs[#outputs + 1] = { "stderr " .. i, read(errf) }
      assert.is_true(rc == 0 or rc == 1, "exit " .. rc .. ": " .. read(errf))
      os.remove(errf)
    end
    -- progress bar on a terminal
    local tty = emulator.run("script -qfec " .. q(env .. " " .. cli .. " install"
      .. " --object-name a --file-name a.apk --object-version 1 --object-size 1 kp000001 kp000002") .. " /dev/null")
    outputs[#outputs + 1] = { "tty", tty }
    -- resume of an install journal, and the journals themselves
    for _, j in ipairs(journals) do
      local content = read(j)
      if content ~= "" then
        outputs[#outputs + 1] = { "journal " .. j, content }
        if content:find('"install"', 1, true) then
          local out = emulator.run(env .. " " .. cli .. " --format json resume " .. q(j) .. " 2>&1")
          outputs[#outputs + 1] = { "resume " .. j, out }
        end
      end
      os.remove(j)
    end
    -- errors: bad URL, connection failure, IAM password in a config file
    outputs[#outputs + 1] = { "bad url", emulator.run(env .. " KOOPHONE_PACKAGE_URL=" .. q("ftp://x/a.apk?" .. QUERY)
      .. " " .. cli .. " install --object-name a --file-name a.apk --object-version 1 --object-size 1 kp000001 2>&1") }
    outputs[#outputs + 1] = { "dead endpoint", emulator.run("KOOPHONE_ENDPOINT=http://127.0.0.1:9 KOOPHONE_TOKEN=" .. q(TOKEN)
      .. " KOOPHONE_PACKAGE_URL=" .. q(URL) .. " " .. cli .. " install --object-name a --file-name a.apk --object-version 1 --object-size 1 kp000001 2>&1") }
    local cfg = os.tmpname()
    local f = io.open(cfg, "wb")
    f:write(cjson.encode { endpoint = emu.url, iam = { user = "emulator-user", password = "emulator-password-no",
      domain = "emulator-domain", project_id = emu.project_id, endpoint = emu.url } })
    f:close()
    os.execute("chmod 600 " .. q(cfg))
    outputs[#outputs + 1] = { "iam cli", emulator.run("KOOPHONE_TOKEN= " .. cli .. " --config " .. q(cfg) .. " run 'echo x' kp000001 2>&1") }
    os.remove(cfg)
    local total = 0
    for _, o in ipairs(outputs) do
      total = total + #o[2]
      assert_clean(o[1], o[2])
    end
    assert.is_true(total > 10000, "captured too little output: " .. total)
  end)
end)
