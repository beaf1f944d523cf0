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
