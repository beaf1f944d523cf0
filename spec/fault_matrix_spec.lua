-- Every emulator fault on every endpoint a batch touches, over HTTP/1.1 and
-- HTTP/2: every id gets exactly one row, in order, with a true status;
-- nothing runs twice; nothing is "ok" that did not run.
--
-- KOOPHONE_MATRIX_N ids per batch (default 100; `make soak` runs 1,000).
local koophone = require "koophone"
local batch = require "koophone.batch"
local emulator = require "spec.support.emulator"

local N = tonumber(os.getenv("KOOPHONE_MATRIX_N") or "100")
local FAULTS = { "500", "503", "429", "reset", "stall", "truncate", "malformed", "missing",
                 "wrong_types", "slow_body", "numeric_code" }
-- each endpoint, and the batch that goes through it
local ENDPOINTS = {
  { "sync-command", "sync" }, { "async-command", "async" }, { "task", "async" },
  { "install", "install" }, { "restart", "restart" }, { "jobs", "restart" },
}
local STATUSES = { ok = true, failed = true, error = true, timeout = true }

local APP = { object_name = "com.example.matrix", file_name = "m.apk", object_version = "1",
              object_size = 1, install_package_url = "https://obs.example.com/m.apk?Signature=x" }

local function list(prefix, n)
  local t = {}
  for i = 1, n do t[i] = ("%s%06d"):format(prefix, i - 1) end
  return t
end

local function run(client, kind, ids)
  local opts = { concurrency = 8, task_timeout = 20, rate = 1000, burst = 100 }
  if kind == "sync" then opts.mode = "sync"; return batch.run(client, "echo m", ids, opts) end
  if kind == "async" then return batch.run(client, "echo m", ids, opts) end
  if kind == "install" then return batch.install(client, APP, ids, opts) end
  return batch.restart(client, ids, opts)
end

for _, http in ipairs { "1.1", "2" } do
  describe("fault matrix over HTTP/" .. http, function()
    local emu, client
    setup(function()
      emu = emulator.start { tls = http == "2", scenario = { durations = { default = 0.2 } } }
      client = assert(koophone.new { token = emu.token, endpoint = emu.url, cph_endpoint = emu.url,
        project_id = emu.project_id, ca_file = emu.cert, http_version = http == "2" and "2" or "1.1",
        timeout = 1, retry_base = 0.01, retry_cap = 0.05, poll_interval = 0.1, poll_max_interval = 0.3 })
    end)
    teardown(function()
      if client then client:close() end
      if emu then emu:stop() end
    end)

    for _, ep in ipairs(ENDPOINTS) do
      for _, kind in ipairs(FAULTS) do
        it(kind .. " on " .. ep[1], function()
          emu:reset()
          emu:add_fault { endpoint = ep[1], kind = kind, probability = 0.3, retry_after = 0.1, seconds = 1.2 }
          local ids = list(ep[2] == "restart" and "ph" or "kp", N)
          local rep, msg = run(client, ep[2], ids)
          assert(rep, msg)
          assert.equal(N, #rep.rows)
          local ex = emu:executions()
          assert.is_true(ex.max <= 1, "a command ran twice")
          for i, row in ipairs(rep.rows) do
            assert.equal(ids[i], row.id, "row " .. i)
            assert.is_true(STATUSES[row.status] == true, ("%s: status %s"):format(row.id, tostring(row.status)))
            if row.status == "ok" then
              assert.is_truthy(next(ex.executions[row.id] or {}), row.id .. " is ok but never ran")
            end
          end
        end)
      end
    end
  end)
end
