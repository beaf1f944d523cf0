-- bin/koophone: the command line. Exit 0 when every id is ok, 1 when some
-- are not, 2 for usage and configuration errors; table, JSON or CSV on
-- stdout; progress on stderr (a bar on a terminal); the token never shown.
-- Run: lua5.4 /usr/bin/busted spec/cli_spec.lua
local emulator = require "spec.support.emulator"
local cjson = require "cjson"

local q = emulator.shell_quote
local TOKEN = "cli-very-secret-token-42"

describe("bin/koophone", function()
  local emu, env
  local cli = q(emulator.repo .. "/bin/koophone")

  -- runs the CLI; returns stdout, stderr, exit status
  local function koophone(args, extra_env, stdin)
    local err = os.tmpname()
    local cmd = (extra_env or env) .. " " .. cli .. " " .. args .. " 2>" .. q(err)
    if stdin then cmd = "printf %s " .. q(stdin) .. " | " .. cmd end
    local out, rc = emulator.run(cmd)
    local f = io.open(err, "rb")
    local e = f:read("*a")
    f:close()
    os.remove(err)
    return out, e, rc
  end

  setup(function()
    emu = emulator.start { token = TOKEN, scenario = { durations = { default = 0.1, restart = 0.1 } } }
    env = ("KOOPHONE_ENDPOINT=%s KOOPHONE_CPH_ENDPOINT=%s KOOPHONE_TOKEN=%s KOOPHONE_PROJECT_ID=%s KOOPHONE_POLL_INTERVAL=0.1")
      :format(q(emu.url), q(emu.url), q(TOKEN), q(emu.project_id))
  end)
  teardown(function() emu:stop() end)

  it("exits 0 when every id is ok, with a table and the summary", function()
    local out, err, rc = koophone("run 'echo hi' kp000001 kp000002")
    assert.equal(0, rc)
    assert.matches("kp000001%s+ok%s+hi", out)
    assert.matches("2 ids: 2 ok", out)
    assert.matches("2 ids: 2 ok", err)
  end)

  it("exits 1 when some id failed", function()
    local out, _, rc = koophone("run --mode sync 'echo hi' kp000001 nosuch")
    assert.equal(1, rc)
    assert.matches("nosuch%s+failed%s+CPS0005", out)
  end)

  it("exits 2 on usage and configuration errors", function()
    local _, err, rc = koophone("run")
    assert.equal(2, rc)
    assert.matches("Usage", err)
    _, err, rc = koophone("run 'echo hi'")
    assert.equal(2, rc)
    assert.matches("no ids", err)
    _, err, rc = koophone("run 'echo hi' kp1", "KOOPHONE_TOKEN= KOOPHONE_ENDPOINT=" .. q(emu.url))
    assert.equal(2, rc)
    assert.matches("token is required", err)
    _, err, rc = koophone("run 'echo hi' kp1 kp1")
    assert.equal(2, rc)
    assert.matches("ids%[2%]", err)
    _, _, rc = koophone("--format xml run 'echo hi' kp1")
    assert.equal(2, rc)
  end)

  it("prints JSON and CSV, reads ids from a file or stdin", function()
    local out, _, rc = koophone("--format json run 'getprop ro.serialno' -", nil, "kp000003\nkp000004, kp000005\n")
    assert.equal(0, rc)
    local t = cjson.decode(out)
    assert.equal(3, t.summary.total)
    assert.equal("kp000004", t.rows[2].output)
    local file = os.tmpname()
    local f = io.open(file, "wb")
    f:write("# fleet\nph000001\nph000002\n")
    f:close()
    out, _, rc = koophone("--format csv restart --ids-file " .. q(file))
    os.remove(file)
    assert.equal(0, rc)
    local lines = {}
    for line in out:gmatch("[^\r\n]+") do lines[#lines + 1] = line end
    assert.equal(3, #lines)
    assert.matches("^id,status,", lines[1])
    assert.matches("^ph000002,ok,2,", lines[3])
  end)

  it("queries a task and a job", function()
    local out = koophone("--format json run 'echo t' kp000001")
    local row = cjson.decode(out).rows[1]
    local tout, _, rc = koophone("--format json task " .. q(row.task_id) .. " --follow")
    assert.equal(0, rc)
    assert.equal(row.job_id, cjson.decode(tout).rows[1].id)
    local rout = koophone("--format json restart ph000009")
    local rrow = cjson.decode(rout).rows[1]
    local jout, _, jrc = koophone("--format json job " .. q(rrow.job_id))
    assert.equal(0, jrc)
    assert.equal("ph000009", cjson.decode(jout).rows[1].id)
  end)

  it("reads a config file and warns when it is world-readable", function()
    local file = os.tmpname() .. ".lua"
    local f = io.open(file, "wb")
    f:write(("return { token = %q, endpoint = %q, concurrency = 2 }"):format(TOKEN, emu.url))
    f:close()
    os.execute("chmod 644 " .. q(file))
    local out, err, rc = koophone("--config " .. q(file) .. " run 'echo cfg' kp000001", "KOOPHONE_TOKEN=")
    assert.equal(0, rc)
    assert.matches("world%-readable", err)
    assert.matches("kp000001%s+ok", out)
    os.execute("chmod 600 " .. q(file))
    local _, err2 = koophone("--config " .. q(file) .. " run 'echo cfg' kp000001", "KOOPHONE_TOKEN=")
    assert.falsy(err2:find("world-readable"))
    os.remove(file)
  end)

  it("draws a progress bar on a terminal, plain lines otherwise", function()
    local out = emulator.run("script -qfec " .. q(env .. " " .. cli .. " run 'sleep 1' kp000001 kp000002 >/dev/null")
      .. " /dev/null")
    assert.matches("%[#+%]%s+100%% 2/2", out)
    assert.matches("\r", out)
    local _, err = koophone("run 'echo plain' kp000001")
    assert.matches("progress: 1/1 ok=1", err)
    assert.falsy(err:find("\r", 1, true))
  end)

  it("never shows the token, even in errors", function()
    local all = {}
    local function collect(args, e)
      local out, err = koophone(args, e)
      all[#all + 1] = out .. err
    end
    collect("run 'echo hi' kp000001")
    collect("--format json run 'echo hi' kp000001 nosuch")
    collect("--format csv run --mode sync 'echo hi' kp000001")
    collect("run 'echo hi' kp000001", env .. " KOOPHONE_ENDPOINT=http://127.0.0.1:1")
    collect("task nosuchtask")
    collect("job nosuchjob")
    local text = table.concat(all, "\n")
    assert.falsy(text:find(TOKEN, 1, true))
  end)
end)

-- koophone.cli in-process: the same code as bin/koophone, with the
-- environment and the streams given by the spec.
describe("koophone.cli in-process", function()
  local cli = require "koophone.cli"
  local Task = require "koophone.task"
  local emu, env

  local function sink()
    local buf = {}
    return { write = function(self, ...)
      for i = 1, select("#", ...) do buf[#buf + 1] = tostring((select(i, ...))) end
      return self
    end, flush = function() end, text = function() return table.concat(buf) end }
  end

  local function source(text)
    return { read = function() local t = text; text = ""; return t end }
  end

  -- runs cli.main; returns status, stdout, stderr
  local function main(argv, extra, stdin)
    local e = {}
    for k, v in pairs(env) do e[k] = v end
    for k, v in pairs(extra or {}) do e[k] = v or nil end
    local out, err = sink(), sink()
    local rc = cli.main(argv, e, { stdout = out, stderr = err, stdin = source(stdin or ""), tty = false })
    return rc, out.text(), err.text()
  end

  local function write_file(path, text, mode)
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
    if mode then os.execute("chmod " .. mode .. " " .. q(path)) end
  end

  local URL = "https://obs.example.com/app.apk?AccessKeyId=AK1&Signature=sig-very-secret-99"

  setup(function()
    emu = emulator.start { token = TOKEN, fleet = 100,
                           scenario = { durations = { default = 0.2, restart = 0.2, install = 0.2 } } }
    env = { KOOPHONE_ENDPOINT = emu.url, KOOPHONE_CPH_ENDPOINT = emu.url, KOOPHONE_TOKEN = TOKEN,
            KOOPHONE_PROJECT_ID = emu.project_id, KOOPHONE_POLL_INTERVAL = "0.05" }
  end)
  teardown(function() emu:stop() end)

  it("--version prints the module's _VERSION and exits 0", function()
    local rc, out, err = main { "--version" }
    assert.equal(0, rc)
    assert.equal("koophone " .. require("koophone").VERSION .. "\n", out)
    assert.equal("", err)
    assert.equal(require("koophone")._VERSION, (out:gsub("\n$", "")))
  end)

  it("--help and a subcommand's -h print to the given stdout and exit 0", function()
    local rc, out = main { "--help" }
    assert.equal(0, rc)
    assert.matches("Usage: koophone", out)
    for _, name in ipairs(cli.order) do assert.matches("\n%s+" .. name .. "%s", out) end
    rc, out = main { "install", "-h" }
    assert.equal(0, rc)
    assert.matches("Usage: koophone install", out)
    assert.matches("KOOPHONE_PACKAGE_URL", out)
    assert.matches("%-%-package%-url%-file", out)
  end)

  it("runs a batch and returns the status instead of exiting", function()
    local rc, out, err = main({ "--format", "json", "run", "--mode", "sync", "echo in-process", "-" }, nil,
                              "kp000001\nkp000002\n")
    assert.equal(0, rc)
    local t = cjson.decode(out)
    assert.equal(2, t.summary.ok)
    assert.equal("in-process", t.rows[2].output)
    assert.matches("2 ids: 2 ok", err)
    rc, out = main { "run", "--mode", "sync", "echo x", "kp000001", "nosuch" }
    assert.equal(1, rc)
    assert.matches("nosuch%s+failed", out)
  end)

  it("usage and configuration errors return 2 with a message", function()
    local rc, _, err = main { "run" }
    assert.equal(2, rc)
    assert.matches("Usage: koophone", err)
    rc, _, err = main({ "run", "echo hi", "kp000001" }, { KOOPHONE_TOKEN = false })
    assert.equal(2, rc)
    assert.matches("^koophone: .*token is required", err)
    rc, _, err = main { "--concurrency", "many", "run", "echo hi", "kp000001" }
    assert.equal(2, rc)
    assert.matches("%-%-concurrency must be a number", err)
    rc, _, err = main({ "run", "echo hi", "kp000001" }, { KOOPHONE_FORMAT = "xml" })
    assert.equal(2, rc)
    assert.matches("%-%-format must be", err)
  end)

  it("refuses a package URL or credentials in a flag, without echoing them", function()
    local before = emu:requests().count
    finally(function() assert.equal(before + 1, emu:requests().count) end) -- nothing sent but the last run
    for _, argv in ipairs {
      { "install", "--url", URL, "kp000001" },
      { "install", "--url=" .. URL, "kp000001" },
      { "install", "--package-url", URL, "kp000001" },
      { "--quiet", "install", "--install-package-url=" .. URL, "kp000001" },
    } do
      local rc, out, err = main(argv)
      assert.equal(2, rc)
      assert.equal("", out)
      assert.matches("KOOPHONE_PACKAGE_URL", err)
      assert.matches("%-%-package%-url%-file", err)
      assert.falsy(err:find("sig-very-secret", 1, true))
      assert.falsy(err:find("obs.example.com", 1, true))
    end
    -- credentials likewise
    for _, argv in ipairs {
      { "--token", "tok-very-secret-77", "run", "echo hi", "kp000001" },
      { "--sk=tok-very-secret-77", "run", "echo hi", "kp000001" },
      { "run", "echo hi", "--security_token", "tok-very-secret-77", "kp000001" },
    } do
      local rc, out, err = main(argv)
      assert.equal(2, rc, argv[1])
      assert.equal("", out)
      assert.matches("never taken from flags", err)
      assert.matches("HUAWEICLOUD_SDK_AK", err)
      assert.falsy(err:find("tok-very-secret-77", 1, true))
    end
    -- after "--" an argument is a value, not a flag
    local rc = main { "run", "--mode", "sync", "--", "echo --token", "kp000001" }
    assert.equal(0, rc)
  end)

  it("takes the package URL from KOOPHONE_PACKAGE_URL or --package-url-file, and never prints it", function()
    local app = os.tmpname()
    write_file(app, cjson.encode { object_name = "com.example.cli", file_name = "cli.apk", object_version = "1.0",
                                   object_size = 3 })
    local before = emu:requests().count
    local rc, out, err = main({ "--format", "json", "install", "--app", app, "kp000011", "kp000012" },
                              { KOOPHONE_PACKAGE_URL = URL })
    assert.equal(0, rc, err)
    assert.equal(2, cjson.decode(out).summary.ok)
    assert.is_true(emu:requests().count > before)
    -- the file wins over the environment: an ftp:// URL there would be refused
    local urlfile = os.tmpname()
    write_file(urlfile, "\n  " .. URL .. "  \n", "600")
    rc, out, err = main({ "--format", "csv", "install", "--app", app, "--package-url-file", urlfile, "kp000013" },
                        { KOOPHONE_PACKAGE_URL = "ftp://nowhere.example/x.apk" })
    assert.equal(0, rc, err)
    assert.matches("kp000013,ok,", out)
    assert.falsy(err:find("world-readable", 1, true))
    -- no URL at all: a validation error naming the field, exit 2, nothing sent
    before = emu:requests().count
    rc, out, err = main { "install", "--app", app, "kp000014" }
    assert.equal(2, rc)
    assert.equal("", out)
    assert.matches("install_package_url", err)
    assert.equal(before, emu:requests().count)
    -- a refused URL is reported without its query string
    local long = "https://obs.example.com/" .. string.rep("a", 2100) .. "?Signature=sig-very-secret-99"
    rc, out, err = main({ "install", "--app", app, "kp000015" }, { KOOPHONE_PACKAGE_URL = long })
    assert.equal(2, rc)
    for _, text in ipairs { out, err } do assert.falsy(text:find("sig-very-secret", 1, true)) end
    os.remove(app)
    os.remove(urlfile)
  end)

  it("resume --submit-missing sends an install's unsent chunks with --app and the package URL again", function()
    local app = os.tmpname()
    write_file(app, cjson.encode { object_name = "com.example.resume", file_name = "r.apk", object_version = "1.0",
                                   object_size = 3 })
    local journal = os.tmpname()
    os.remove(journal)
    local ids = { "kp000051", "kp000052", "kp000053", "kp000054", "kp000055", "kp000056" }
    -- one submit a second, a batch of half a second: chunks 2 and 3 are never sent
    local argv = { "--quiet", "--journal", journal, "--rate", "1", "--timeout", "0.5", "--format", "json",
                   "install", "--app", app, "--chunk", "2" }
    for _, id in ipairs(ids) do argv[#argv + 1] = id end
    local rc, out = main(argv, { KOOPHONE_PACKAGE_URL = URL })
    assert.equal(1, rc)
    assert.matches("not submitted", out)
    -- the journal keeps the URL scrubbed: without the app again, no resubmission
    local err
    rc, out, err = main({ "--quiet", "--format", "json", "resume", journal, "--submit-missing" })
    assert.equal(2, rc)
    assert.equal("", out)
    assert.matches("app", err)
    rc, out = main({ "--quiet", "--format", "json", "resume", journal, "--submit-missing", "--app", app },
                   { KOOPHONE_PACKAGE_URL = URL })
    assert.equal(0, rc, out)
    local t = cjson.decode(out)
    assert.equal(6, t.summary.ok)
    local f = assert(io.open(journal, "rb"))
    local text = f:read("*a")
    f:close()
    assert.falsy(text:find("sig-very-secret", 1, true))
    os.remove(journal)
    os.remove(app)
  end)

  it("resume --submit-missing takes a command holding a signed URL from --command-file", function()
    local command = "echo https://obs.example.com/a?Signature=sig-very-secret-99"
    local journal = os.tmpname()
    os.remove(journal)
    local rc, out = main({ "--quiet", "--journal", journal, "--rate", "1", "--timeout", "0.5", "--format", "json",
                           "run", "--mode", "sync", "--chunk", "1", command, "kp000061", "kp000062", "kp000063" })
    assert.equal(1, rc)
    assert.equal(1, cjson.decode(out).summary.ok) -- the first chunk; the others never sent
    assert.falsy(out:find("sig-very-secret", 1, true)) -- the output echoes the URL: scrubbed
    local err
    rc, out, err = main({ "--quiet", "--format", "json", "resume", journal, "--submit-missing" })
    assert.equal(2, rc)
    assert.equal("", out)
    assert.matches("command", err)
    local cmdfile = os.tmpname()
    write_file(cmdfile, command .. "\n", "600")
    rc, out, err = main({ "--quiet", "--format", "json", "resume", journal, "--submit-missing", "--command-file", cmdfile })
    assert.equal(0, rc, err)
    assert.equal(3, cjson.decode(out).summary.ok)
    assert.falsy((out .. err):find("sig-very-secret", 1, true))
    os.remove(cmdfile)
    os.remove(journal)
  end)

  it("a refused first request stops the run: exit 2, one line, nothing more sent", function()
    local ids = {}
    for i = 1, 1000 do ids[i] = ("kp%06d"):format(i) end
    local before = emu:requests().count
    local rc, out, err = main({ "--concurrency", "1", "run", "echo hi", "-" }, { KOOPHONE_TOKEN = "wrong-token-1234" },
                              table.concat(ids, "\n"))
    assert.equal(2, rc)
    assert.equal("", out)
    local lines = {}
    for line in err:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.equal(1, #lines, err)
    assert.matches("^koophone: stopped: the first request was refused %(.*401", lines[1])
    assert.matches("nothing more was sent", lines[1])
    assert.falsy(err:find("wrong-token-1234", 1, true))
    assert.equal(before + 1, emu:requests().count) -- one request, not ten
    -- with requests in flight together: still one line and exit 2
    rc, out, err = main({ "--quiet", "restart", "ph000001", "ph000002" }, { KOOPHONE_TOKEN = "wrong-token-1234" })
    assert.equal(2, rc)
    assert.equal("", out)
    assert.matches("^koophone: stopped: the first request was refused [^\n]*\n$", err)
    -- a task or a job: the one request is refused, exit 2 as well
    for _, argv in ipairs { { "task", "t-1" }, { "task", "t-1", "--follow" }, { "job", "j-1" } } do
      rc, out, err = main(argv, { KOOPHONE_TOKEN = "wrong-token-1234" })
      assert.equal(2, rc, table.concat(argv, " "))
      assert.equal("", out)
      assert.matches("^koophone: HTTP 401 [^\n]*\n$", err)
    end
  end)

  it("task --follow waits with Task:wait, reporting progress", function()
    local _, out = main { "--format", "json", "run", "echo follow", "kp000021", "kp000022" }
    local row = cjson.decode(out).rows[1]
    local waits, progress = 0, 0
    local wait = Task.wait
    Task.wait = function(self, opts)
      waits = waits + 1
      local on_progress = opts.on_progress
      opts.on_progress = function(...) progress = progress + 1; return on_progress(...) end
      return wait(self, opts)
    end
    local ok, rc, tout, terr = pcall(main, { "--format", "json", "task", row.task_id, "--follow" })
    Task.wait = wait
    assert.is_true(ok, rc)
    assert.equal(0, rc, terr)
    assert.equal(1, waits)
    assert.is_true(progress >= 1)
    assert.matches("progress: 2/2 ok=2", terr) -- both jobs of the task, found by its id
    local t = cjson.decode(tout)
    assert.equal(row.job_id, t.rows[1].id)
    assert.equal("follow", t.rows[1].output)
    -- a restart's request id, followed the same way: rows by phone id
    local _, rout = main { "--format", "json", "restart", "ph000031", "ph000032" }
    local rrow = cjson.decode(rout).rows[1]
    local rrc, fout = main { "--format", "json", "task", "--kind", "restart", rrow.request_id, "--follow" }
    assert.equal(0, rrc)
    local ids = {}
    for _, r in ipairs(cjson.decode(fout).rows) do ids[#ids + 1] = r.id end
    table.sort(ids)
    assert.same({ "ph000031", "ph000032" }, ids)
  end)

  it("task --follow ends at --timeout with the running jobs as timeout rows", function()
    local client = assert(require("koophone").new { token = TOKEN, endpoint = emu.url })
    emu:config { durations = { default = 30 } }
    local task = client:async_command("echo slow", { "kp000041" })
    emu:config { durations = { default = 0.2 } }
    assert.truthy(task and task.id)
    local t0 = require("koophone").now()
    local rc, tout, terr = main { "--timeout", "0.5", "--format", "json", "task", task.id, "--follow" }
    assert.equal(1, rc, terr)
    local rows = cjson.decode(tout).rows
    assert.equal(1, #rows)
    assert.equal("timeout", rows[1].status)
    assert.is_true(require("koophone").now() - t0 < 3)
    client:close()
  end)

  it("reads a Lua config file in an empty environment", function()
    local file = os.tmpname() .. ".lua"
    write_file(file, ("return { token = %q, endpoint = %q, format = 'csv' }"):format(TOKEN, emu.url), "600")
    local rc, out, err = main({ "--config", file, "run", "--mode", "sync", "echo cfg", "kp000001" },
                              { KOOPHONE_TOKEN = false, KOOPHONE_ENDPOINT = false })
    assert.equal(0, rc, err)
    assert.matches("^id,status,", out)
    write_file(file, "return { token = os.getenv('HOME') }", "600")
    rc, out, err = main({ "--config", file, "run", "echo cfg", "kp000001" }, { KOOPHONE_TOKEN = false })
    assert.equal("", out)
    assert.equal(2, rc)
    assert.matches("must return a table", err)
    os.remove(file)
  end)

  describe("the fleet", function()
    before_each(function() emu:reset() end)

    it("instances: every page as a table, CSV or a JSON array; --status filters", function()
      local rc, out, err = main { "instances", "--page-size", "30" }
      assert.equal(0, rc, err)
      assert.matches("^instance_id%s+state%s+vendor_status%s+phone_id", out)
      assert.matches("\nkp000000%s+running%s+2%s+ph000000%s+phone%-kp000000", out)
      assert.matches("104 instances, 104 running", err) -- 100 + the pages' 4 example ids
      assert.equal(4, emu:requests { endpoint = "instances" }.count)
      rc, out = main { "--format", "csv", "instances" }
      assert.equal(0, rc)
      local lines = {}
      for line in out:gmatch("([^\r\n]+)") do lines[#lines + 1] = line end
      assert.equal(105, #lines)
      assert.equal("instance_id,state,vendor_status,phone_id,instance_name,backup_status", lines[1])
      assert.equal("kp000099,running,2,ph000099,phone-kp000099,", lines[101])
      assert(main { "reboot", "kp000007" } == 0)
      rc, out = main { "--format", "json", "instances", "--status", "starting" }
      assert.equal(0, rc)
      local list = cjson.decode(out)
      assert.equal(1, #list)
      assert.same({ "kp000007", "starting", 4 }, { list[1].instance_id, list[1].state, list[1].vendor_status })
      rc, out = main { "--format", "json", "instances", "--name", "nothing-like-this" }
      assert.equal(0, rc)
      assert.same({}, cjson.decode(out))
    end)

    it("instances: a bad filter is refused before sending (exit 2); a failed page exits 1", function()
      local rc, _, err = main { "instances", "--status", "asleep" }
      assert.equal(2, rc)
      assert.matches("^koophone: status must be one of", err)
      rc, _, err = main { "instances", "--page-size", "500" }
      assert.equal(2, rc)
      assert.matches("page_size must be between 1 and 200", err)
      assert.equal(0, emu:requests { endpoint = "instances" }.count)
      emu:add_fault { endpoint = "instances", kind = "500" }
      rc, _, err = main { "instances" }
      emu:clear_faults()
      assert.equal(1, rc)
      assert.matches("HTTP 500", err)
    end)

    it("status: the state of each id, ids from stdin", function()
      assert(main { "reboot", "kp000002" } == 0)
      local rc, out, err = main({ "status", "-" }, nil, "kp000001\nkp000002 ghost001\n")
      assert.equal(0, rc, err)
      assert.matches("kp000001%s+ok%s+running", out)
      assert.matches("kp000002%s+ok%s+starting", out)
      assert.matches("ghost001%s+ok%s+unknown", out)
      assert.matches("3 ids: 3 ok", err)
    end)

    it("apps: the app list of one instance; an unknown one exits 1", function()
      local rc, out, err = main { "apps", "kp000001" }
      assert.equal(0, rc, err)
      assert.matches("com.android.settings%s+12%s+Settings", out)
      assert.matches("kp000001: 8 apps", err)
      rc, out = main { "--format", "csv", "apps", "--type", "third_party", "kp000001" }
      assert.equal(0, rc)
      assert.equal("app_pkg,app_version,app_name\r\n", out)
      rc, out, err = main { "apps", "ghost001" }
      assert.equal(1, rc)
      assert.equal("", out)
      assert.matches("KOOPHONE.API.1001", err)
      rc, out, err = main { "apps", string.rep("k", 33) }
      assert.equal(2, rc)
      assert.equal("", out)
      assert.matches("instance_id is 33 characters, at most 32", err)
    end)

    it("reboot, reset and backup: ids from arguments, a file or stdin; tasks followed", function()
      local file = os.tmpname()
      write_file(file, "kp000011\nkp000012 # two\n")
      local rc, out, err = main { "--format", "json", "reset", "--ids-file", file }
      os.remove(file)
      assert.equal(0, rc, err)
      local rows = cjson.decode(out).rows
      assert.same({ "kp000011", "ok" }, { rows[1].id, rows[1].status })
      assert.is_string(rows[2].task_id)
      local trc, tout = main { "--format", "json", "task", "--kind", "reset", rows[1].task_id }
      assert.equal(0, trc)
      assert.equal(2, #cjson.decode(tout).rows)
      rc, out = main({ "backup", "-" }, nil, "kp000013\n")
      assert.equal(0, rc)
      assert.matches("kp000013%s+ok", out)
      rc, out = main { "reboot", "kp000014", "ghost001" }
      assert.equal(1, rc) -- the vendor refuses the whole request
      assert.matches("ghost001%s+error%s+KOOPHONE.API.1001", out)
      rc, out, err = main { "reboot", "kp000014", "kp000014" }
      assert.equal("", out)
      assert.equal(2, rc)
      assert.matches("duplicates", err)
      assert.equal(1, emu:requests { endpoint = "reboot" }.count)
    end)
  end)
end)

-- The batch option the CLI sets: stop after a refused first submit.
describe("koophone.batch stop_on_auth_failure", function()
  local koophone = require "koophone"
  local batch = require "koophone.batch"
  local emu

  setup(function() emu = emulator.start { token = TOKEN, fleet = 10 } end)
  teardown(function() emu:stop() end)

  local function ids(n)
    local t = {}
    for i = 1, n do t[i] = ("kp%06d"):format(i) end
    return t
  end

  it("sends nothing after a 401 on the first submit; the report says why", function()
    local client = assert(koophone.new { token = "wrong-token-5678", endpoint = emu.url })
    local before = emu:requests().count
    local report = batch.run(client, "echo hi", ids(250), { concurrency = 1, stop_on_auth_failure = true })
    assert.truthy(report)
    assert.equal(before + 1, emu:requests().count)
    assert.equal(401, report.aborted.http_status)
    assert.equal(250, report.summary.error)
    assert.equal(401, report.rows[1].http_status or report.aborted.http_status)
    assert.matches("^not submitted: an earlier request was refused", report.rows[250].message)
    -- without the option every chunk is sent, and refused
    before = emu:requests().count
    report = batch.run(client, "echo hi", ids(250), { concurrency = 1 })
    assert.is_nil(report.aborted)
    assert.equal(before + 3, emu:requests().count)
    client:close()
  end)

  it("is a boolean", function()
    local client = assert(koophone.new { token = TOKEN, endpoint = emu.url })
    local report, m, e = batch.run(client, "echo hi", ids(1), { stop_on_auth_failure = "yes" })
    assert.is_nil(report)
    local err = e or m
    assert.equal("validation", err.kind)
    assert.equal("stop_on_auth_failure", err.field)
    client:close()
  end)
end)
