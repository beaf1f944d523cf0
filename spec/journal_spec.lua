-- Journals and resume: a batch with `journal = path` writes every chunk's
-- task (id and jobs) before polling it; after a crash, `batch.resume`
-- follows those tasks again and submits nothing twice.
-- Run: lua5.4 /usr/bin/busted spec/journal_spec.lua
local emulator = require "spec.support.emulator"
local koophone = require "koophone"
local batch = require "koophone.batch"
local journal = require "koophone.journal"
local cjson = require "cjson"

local function ids(n, fmt)
  local t = {}
  for i = 0, n - 1 do t[#t + 1] = string.format(fmt or "kp%06d", i) end
  return t
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function lines_of(path)
  local out = {}
  for line in read(path):gmatch("[^\n]+") do out[#out + 1] = line end
  return out
end

local function write(path, lines)
  local f = assert(io.open(path, "wb"))
  f:write(table.concat(lines, "\n"), "\n")
  f:close()
end

local function assert_complete(report, list)
  assert.equal(#list, #report.rows)
  for i, id in ipairs(list) do assert.equal(id, report.rows[i].id) end
end

describe("journal and resume", function()
  local emu, client, path

  setup(function()
    emu = emulator.start { token = "journal-secret-token", scenario = { durations = { default = 0.3 } } }
    client = assert(koophone.new { token = emu.token, endpoint = emu.url, cph_endpoint = emu.url,
                                   project_id = emu.project_id, poll_interval = 0.1 })
  end)
  teardown(function()
    client:close()
    emu:stop()
  end)
  before_each(function()
    emu:reset()
    path = os.tmpname()
    os.remove(path)
  end)
  after_each(function() os.remove(path) end)

  it("writes the batch, then each chunk's task before polling it, as flushed JSON lines", function()
    local list = ids(250)
    local report = assert(batch.run(client, "echo journal", list, { journal = path }))
    assert.equal(250, report.summary.ok)
    local recs = assert(journal.read(path))
    assert.equal("batch", recs[1].type)
    assert.same(list, recs[1].ids)
    assert.equal("command", recs[1].operation.kind)
    local task_at, rows_at = {}, {}
    for n, r in ipairs(recs) do
      if r.type == "task" then task_at[r.chunk] = n; assert.is_string(r.task.id); assert.is_table(r.task.jobs) end
      if r.type == "rows" then rows_at[r.chunk] = n end
    end
    for chunk = 1, 3 do assert.is_true(task_at[chunk] < rows_at[chunk]) end
    assert.equal("end", recs[#recs].type)
    assert.falsy(read(path):find(emu.token, 1, true))
  end)

  it("keeps no signed URL query string (and no token) for an install", function()
    local app = { object_name = "a", file_name = "a.apk", object_version = "1", object_size = 1,
                  install_package_url = "https://obs.example.com/a.apk?AccessKeyId=AK&Signature=SIG" }
    assert(batch.install(client, app, ids(20), { journal = path }))
    local text = read(path)
    assert.falsy(text:find("Signature", 1, true))
    assert.falsy(text:find("AccessKeyId", 1, true))
    assert.truthy(text:find("a.apk?<redacted>", 1, true))
  end)

  it("resumes a finished batch from its journal without any request", function()
    local list = ids(150)
    local first = assert(batch.run(client, "echo done", list, { journal = path }))
    emu:reset()
    local again = assert(batch.resume(client, path))
    assert.equal(0, #emu:requests().requests)
    assert_complete(again, list)
    assert.equal(first.summary.ok, again.summary.ok)
  end)

  it("re-attaches to the tasks of a crashed batch and polls them; unsent chunks are errors", function()
    local list = ids(350)
    assert(batch.run(client, "sleep 1", list, { journal = path, concurrency = 1 }))
    -- the journal as a crash right after chunk 2's task record leaves it
    local kept, tasks = {}, 0
    for _, line in ipairs(lines_of(path)) do
      local r = cjson.decode(line)
      if r.type == "batch" or r.type == "submit" and r.chunk <= 3 or (r.type == "task" and r.chunk <= 2) then
        kept[#kept + 1] = line
        if r.type == "task" then tasks = tasks + 1 end
      end
    end
    assert.equal(2, tasks)
    kept[#kept + 1] = '{"type":"rows","chunk":4,"ro' -- a torn last line is ignored
    write(path, kept)
    local function count(ep) return #emu:requests { endpoint = ep }.requests end
    local submits, queries = count("async-command"), count("task")
    local report = assert(batch.resume(client, path))
    assert_complete(report, list)
    assert.equal(submits, count("async-command"))
    assert.is_true(count("task") >= queries + 2)
    assert.equal(200, report.summary.ok)
    -- chunk 3: submitted, but no task id recorded: it may have run
    assert.equal("error", report.rows[201].status)
    assert.is_true(report.rows[201].maybe_executed)
    -- chunk 4: never sent
    assert.equal("error", report.rows[301].status)
    assert.equal("not submitted before the interruption", report.rows[301].message)
    -- and submit_missing sends only that one
    local more = assert(batch.resume(client, path, { submit_missing = true }))
    assert.equal(submits + 1, count("async-command"))
    assert.equal(250, more.summary.ok)
    assert.is_nil(more.rows[201].message:find("not submitted"))
  end)

  it("resumes a CLI batch killed half-way with SIGKILL: every id once, nothing run twice", function()
    local repo = emulator.repo
    local q = emulator.shell_quote
    local env = ("KOOPHONE_ENDPOINT=%s KOOPHONE_TOKEN=%s KOOPHONE_PROJECT_ID=%s "):format(
      q(emu.url), q(emu.token), q(emu.project_id))
    local cli = q(repo .. "/bin/koophone")
    local list = ids(1000)
    local idfile = os.tmpname()
    write(idfile, list)
    local h = io.popen(env .. cli .. " --quiet --journal " .. q(path) .. " --concurrency 2 --rate 4 --poll-interval 0.2"
      .. " run 'sleep 1' --ids-file " .. q(idfile) .. " >/dev/null 2>&1 & echo $!")
    local pid = h:read("*l")
    h:close()
    -- wait until the journal holds a few tasks, then kill the batch
    local deadline = koophone.now() + 10
    while koophone.now() < deadline do
      local f = io.open(path, "rb")
      local text = f and f:read("*a") or ""
      if f then f:close() end
      local _, n = text:gsub('"type":"task"', "")
      if n >= 3 then break end
      os.execute("sleep 0.1")
    end
    os.execute("kill -9 " .. pid)
    os.execute("sleep 0.2")
    local text = read(path)
    assert.falsy(text:find('"type":"end"', 1, true), "the batch ended before the kill")
    local out = io.popen(env .. cli .. " --quiet --format json resume " .. q(path) .. " 2>/dev/null")
    local json = out:read("*a")
    out:close()
    os.remove(idfile)
    local rep = cjson.decode(json)
    assert.equal(1000, #rep.rows)
    for i, id in ipairs(list) do assert.equal(id, rep.rows[i].id) end
    assert.is_true(rep.summary.ok >= 300)
    local x = emu:executions()
    assert.equal(1, x.max)
    assert.falsy(json:find(emu.token, 1, true))
  end)
end)
