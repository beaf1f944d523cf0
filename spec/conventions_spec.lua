-- The Lua conventions koophone follows, as a user of luv, cqueues or
-- LuaSocket expects them: expected failures are `nil, message, err` (a
-- one-line string, then the structured table), successes return nothing
-- that looks like an error, option tables refuse typos.
local koophone = require "koophone"
local batch = require "koophone.batch"
local workflow = require "koophone.workflow"
local emulator = require "spec.support.emulator"

-- The public modules, and the functions in them that may fail.
local PUBLIC = { "init", "client", "task", "batch", "report", "workflow", "fleet" }

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

describe("the failure shape", function()
  it("is nil, message, err in every public function's source (a grep)", function()
    local bad = {}
    for _, name in ipairs(PUBLIC) do
      local path = emulator.repo .. "/lua/koophone/" .. name .. ".lua"
      local current
      local n = 0
      for line in read(path):gmatch("([^\n]*)\n") do
        n = n + 1
        local fn = line:match("^function ([%w_%.:]+)%(")
        if fn then current = fn elseif line:match("^end") then current = nil end
        -- public: Client:x, M.x, Task:x ... but not Client:_x or local helpers
        local public = current and not current:match("[%.:]_")
        if public then
          local rest = line:match("return nil, (.*)$")
          -- "nil, x" alone is the old two-value shape; "nil, msg, err" and
          -- errors.fail(...) are the new one
          if rest and not rest:find(",") and not rest:match("^nil") then
            bad[#bad + 1] = ("%s:%d (%s): %s"):format(name, n, current, line:match("^%s*(.-)%s*$"))
          end
        end
      end
    end
    assert.same({}, bad)
  end)
end)

describe("koophone's Lua conventions", function()
  local emu, client
  setup(function()
    emu = emulator.start { scenario = { durations = { default = 0.1 } } }
    client = assert(koophone.new { token = emu.token, endpoint = emu.url, cph_endpoint = emu.url,
                                   project_id = emu.project_id, retries = 0 })
  end)
  teardown(function()
    if client then client:close() end
    if emu then emu:stop() end
  end)

  -- one failing call of every public function that can fail
  local function failing_calls()
    local task = assert(client:task("t-1", { jobs = {} }))
    return {
      { "koophone.new", function() return koophone.new { endpoint = emu.url } end },
      { "koophone.engine", function() return koophone.engine { max_conections = 1 } end },
      { "client:sync_command", function() return client:sync_command("", { "kp000001" }) end },
      { "client:async_command", function() return client:async_command("ls", {}) end },
      { "client:install_app", function() return client:install_app({}, { "kp000001" }) end },
      { "client:restart_phones", function() return client:restart_phones({}) end },
      { "client:query_task", function() return client:query_task("..") end },
      { "client:task", function() return client:task("") end },
      { "client:job", function() return client:job("a/b") end },
      { "client:jobs", function() return client:jobs {} end },
      { "task:wait", function() return task:wait { timeout = -1 } end },
      { "client:reboot", function() return client:reboot {} end },
      { "client:reset", function() return client:reset {} end },
      { "client:backup", function() return client:backup {} end },
      { "client:instance_status", function() return client:instance_status {} end },
      { "client:instances", function() return client:instances { page_size = 0 } end },
      { "client:each_instance", function() return client:each_instance { order = "up" } end },
      { "client:apps", function() return client:apps("") end },
      { "client:phone", function() return client:phone("") end },
      { "client:phones", function() return client:phones { limit = 0 } end },
      { "client:each_phone", function() return client:each_phone { offset = -1 } end },
      { "client:reset_phones", function() return client:reset_phones {} end },
      { "a vendor error (fleet)", function() return client:apps("ghost001") end },
      { "batch.reboot", function() return batch.reboot(client, {}) end },
      { "batch.reset", function() return batch.reset(client, {}) end },
      { "batch.backup", function() return batch.backup(client, {}) end },
      { "batch.status", function() return batch.status(client, {}) end },
      { "batch.reset_phones", function() return batch.reset_phones(client, {}) end },
      { "batch.phone_status", function() return batch.phone_status(client, {}) end },
      { "batch.apps", function() return batch.apps(client, {}) end },
      { "batch.run", function() return batch.run(client, "ls", {}) end },
      { "batch.install", function() return batch.install(client, {}, { "kp000001" }) end },
      { "batch.restart", function() return batch.restart(client, {}) end },
      { "batch.resume", function() return batch.resume(client, "/nonexistent/journal") end },
      { "batch.check_app", function() return batch.check_app {} end },
      { "report:retry_failed", function()
          return require("koophone.report").new { rows = {} }:retry_failed() end },
      { "workflow:execute", function() return workflow.new(client):execute() end },
      { "a vendor error", function() return client:query_task("no-such-task") end },
    }
  end

  it("fails with nil, a one-line string equal to tostring(err), and the error table", function()
    emu:reset()
    for _, c in ipairs(failing_calls()) do
      local n = select("#", c[2]())
      local v, msg, err = c[2]()
      assert.is_nil(v, c[1])
      assert.equal(3, n, c[1] .. " returned " .. n .. " values")
      assert.is_string(msg, c[1])
      assert.is_table(err, c[1])
      assert.is_string(err.kind, c[1])
      assert.equal(tostring(err), msg, c[1])
      assert.is_nil(msg:find("\n"), c[1] .. ": more than one line: " .. msg)
    end
  end)

  it("works with assert(x()): the error raised is the message", function()
    -- Lua's own assert (busted's `assert` is luassert)
    local lua_assert = _G.assert
    local ok, raised = pcall(function() return lua_assert(koophone.new { endpoint = emu.url }) end)
    assert.is_false(ok)
    assert.is_string(raised)
    assert.matches("token is required", raised)
  end)

  it("works with if not x then ... and with .. on either side of the error table", function()
    local c, msg, err = koophone.new { endpoint = emu.url }
    if not c then
      assert.equal("failed: " .. msg, "failed: " .. err)
      assert.equal(msg .. "!", err .. "!")
    else
      error("koophone.new without a token was accepted")
    end
  end)

  it("returns nothing that looks like an error on success", function()
    emu:reset()
    assert.equal(1, select("#", client:sync_command("echo hi", { "kp000001" })))
    local rows = client:sync_command("echo hi", { "kp000001" })
    assert.is_string(rows.request_id) -- on the result instead
    assert.equal(1, rows.attempts)
    local task = assert(client:async_command("echo hi", { "kp000001", "kp000002" }))
    assert.equal(1, select("#", task:wait { timeout = 10 }))
    assert.equal(1, select("#", batch.run(client, "echo hi", { "kp000001", "kp000002" })))
    assert.equal(1, select("#", client:query_task(task.id)))
  end)
end)

describe("messages", function()
  local emu
  setup(function() emu = emulator.start {} end)
  teardown(function() emu:stop() end)

  it("say the HTTP status and the vendor code as a sentence, never 401.0", function()
    local c = assert(koophone.new { token = "not-the-token", endpoint = emu.url, retries = 0 })
    local _, msg, err = c:sync_command("echo hi", { "kp000001" })
    c:close()
    assert.equal(401, err.http_status)
    assert.matches("^HTTP 401", msg)
    assert.is_nil(msg:find("401%.0"))
    assert.is_nil(msg:find("not%-the%-token"))
  end)

  it("say what a broken connection means, and that the command may have run", function()
    local c = assert(koophone.new { token = emu.token, endpoint = emu.url, retries = 0 })
    emu:add_fault { endpoint = "sync-command", kind = "reset", count = 1 }
    local _, msg, err = c:sync_command("echo hi", { "kp000001" })
    c:close()
    assert.equal("protocol", err.kind)
    assert.is_true(err.maybe_executed)
    assert.matches("the command may have run", msg)
    assert.is_nil(msg:find("rewind"))
  end)
end)

describe("strict options", function()
  local client
  setup(function() client = assert(koophone.new { token = "t", endpoint = "http://127.0.0.1:9" }) end)
  teardown(function() client:close() end)

  local function refused(what, key, hint, ...)
    local v, msg, err = ...
    assert.is_nil(v, what .. " accepted " .. key)
    assert.equal("validation", err.kind, what)
    assert.equal(key, err.field:match("([%w_]+)$"), what)
    assert.matches("unknown .*'" .. key .. "'", msg, 1, what)
    if hint then assert.matches("did you mean '" .. hint .. "'%?", msg, 1, what) end
  end

  it("refuse a typo in koophone.new with the intended key", function()
    refused("koophone.new", "timout", "timeout", koophone.new { token = "t", timout = 3 })
    refused("koophone.new", "zzz", nil, koophone.new { token = "t", zzz = 3 })
  end)

  it("refuse unknown keys in every option table", function()
    refused("engine", "max_conections", "max_connections", koophone.engine { max_conections = 1 })
    refused("call", "requst_id", "request_id", client:sync_command("ls", { "kp000001" }, { requst_id = "x" }))
    refused("restart entry", "propety", "property",
            client:restart_phones { { phone_id = "ph000001", propety = { a = 1 } } })
    refused("install field", "object_nme", "object_name", client:install_app({ object_nme = "x" }, { "kp000001" }))
    refused("batch", "concurency", "concurrency", batch.run(client, "ls", { "kp000001" }, { concurency = 2 }))
    refused("batch restart entry", "propety", "property",
            batch.restart(client, { { phone_id = "ph000001", propety = {} } }))
    local task = assert(client:task("t-1", { jobs = {} }))
    refused("task:wait", "timout", "timeout", task:wait { timout = 1 })
    refused("client:task", "job", "jobs", client:task("t-1", { job = {} }))
    refused("jobs query", "requestid", "request_id", client:jobs { requestid = "r" })
    refused("instances filter", "page_sise", "page_size", client:instances { page_sise = 10 })
    refused("phones filter", "limt", "limit", client:phones { limt = 10 })
    refused("apps option", "app_typ", "app_type", client:apps("kp000001", { app_typ = 1 }))
    refused("reboot call", "requst_id", "request_id", client:reboot({ "kp000001" }, { requst_id = "x" }))
    refused("wait_running", "dedline", "deadline",
            workflow.new(client):reboot({ "kp000001" }):wait_running { dedline = 1 }:execute())
    refused("workflow step", "concurency", "concurrency",
            workflow.new(client):run("ls", { ids = { "kp000001" }, concurency = 1 }):execute())
    refused("workflow", "rat", "rate", workflow.new(client, { rat = 1 }):run("ls", { ids = { "kp000001" } }):execute())
  end)

  it("refuse bad task:wait values before polling (a NaN interval would never poll)", function()
    local task = assert(client:task("t-1", { jobs = {} }))
    for _, o in ipairs { { interval = 0 / 0 }, { timeout = math.huge }, { max_interval = -1 },
                         { ratio = 2 }, { on_progress = "x" } } do
      local k = next(o)
      local v, _, err = task:wait(o)
      assert.is_nil(v, k)
      assert.equal(k, err.field)
    end
  end)

  it("refuse durations that do not fit the core (timeout = 1e300)", function()
    local c, _, err = koophone.new { token = "t", timeout = 1e300 }
    assert.is_nil(c)
    assert.equal("timeout", err.field)
  end)
end)
