-- A second nginx (the "host") that runs koophone inside OpenResty / ngx_lua,
-- for spec/openresty_spec.lua. Lua 5.1-5.4 (the spec side).
--
--   local host = ngx_host.start{ emu = emu, workers = 1 }
--   host.url, host.prefix, host:error_log(), host:stop()
--
-- Locations: /ping (204 at once), /sleep?s=0.5 (204 after s seconds),
-- /batch?n=1000&adapter=1&waker=1&slack=0.01 (a batch.run
-- against the emulator; the summary as JSON), /info.
local emulator = require "spec.support.emulator"

local M = {}
local shq, run = emulator.shell_quote, emulator.run

local CJSON_51 = "/usr/lib/x86_64-linux-gnu/lua/5.1/?.so"

local CONF = [[
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes @WORKERS@;
daemon on;
pid logs/nginx.pid;
error_log logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    keepalive_requests 100000;
    lua_package_path "@REPO@/lua/?.lua;@REPO@/lua/?/init.lua;;";
    lua_package_cpath "@REPO@/@BUILD@/?.so;@CJSON@;;";

    init_worker_by_lua_block {
        -- counts every ngx.sleep of the worker (for /wakeups)
        KP_SLEEPS = 0
        local sleep = ngx.sleep
        ngx.sleep = function(s) KP_SLEEPS = KP_SLEEPS + 1 return sleep(s) end
        -- one client (one engine) per worker, created in the worker
        local koophone = require "koophone"
        KP_CLIENT = assert(koophone.new {
            token = @TOKEN@, endpoint = @URL@, cph_endpoint = @URL@,
            project_id = @PROJECT@, poll_interval = 0.1,
        })
    }

    server {
        listen 127.0.0.1:@PORT@;
        location = /ping { content_by_lua_block { ngx.exit(204) } }
        # a request that takes s seconds and does nothing (the benches' null batch)
        location = /sleep { content_by_lua_block { ngx.sleep(tonumber(ngx.var.arg_s) or 1) ngx.exit(204) } }
        location = /info {
            content_by_lua_block {
                ngx.say(require("cjson").encode {
                    lua = jit and jit.version or _VERSION,
                    waiter_ngx = require("koophone.sched.ngx") ~= nil,
                })
            }
        }
        # the README's error idioms inside nginx (LuaJIT): assert(x()),
        # "msg: " .. err, ngx.say(err) and ngx.log(ngx.ERR, err)
        location = /idioms {
            content_by_lua_block {
                local koophone = require "koophone"
                local c, err, e = koophone.new { endpoint = @URL@ }
                ngx.log(ngx.WARN, "idiom log: ", err)
                ngx.say("say: ", err)
                ngx.say("concat: " .. e)
                local ok, raised = pcall(function() return assert(koophone.new { endpoint = @URL@ }) end)
                ngx.say("assert: ", tostring(ok), " ", type(raised), " ", raised)
                local rows, msg = KP_CLIENT:sync_command("", { "kp000001" })
                ngx.say("call: ", tostring(rows), " ", msg)
                ngx.say("client: ", tostring(c))
            }
        }
        # one async task to follow (/task?secs=30&n=10&waker=1 -> its id), handlers
        # that follow it (/follow?id=...), and the wake-ups they cost
        # (/wakeups: since the last /wakeups; ngx.sleep calls plus the
        # adapter's own counts)
        location = /task {
            lua_check_client_abort on; # a client that hangs up ends the handler, even while it waits
            content_by_lua_block {
                local args = ngx.req.get_uri_args()
                require("koophone.sched.ngx").use_waker = args.waker ~= "0" -- (read at each turn of the driver)
                local ids = {}
                for i = 1, tonumber(args.n) or 10 do ids[i] = string.format("kp%06d", i) end
                local task = assert(KP_CLIENT:async_command("sleep " .. (args.secs or 30), ids))
                ngx.say(task.id)
            }
        }
        location = /follow {
            content_by_lua_block {
                local task = assert(KP_CLIENT:task(ngx.var.arg_id))
                local rows = assert(task:wait { timeout = 120 })
                ngx.say(#rows, " ", task.polls)
            }
        }
        location = /wakeups {
            content_by_lua_block {
                local adapter = require "koophone.sched.ngx"
                local st = adapter.stats or {}
                ngx.say(require("cjson").encode { sleeps = KP_SLEEPS, driver = st.driver or 0,
                                                  handlers = st.handlers or 0, retimes = st.retimes or 0, starts = st.starts or 0,
                                                  waker = st.waker or false, waker_error = st.waker_error })
                KP_SLEEPS = 0
                if adapter.reset_stats then adapter.reset_stats() end
            }
        }
        location = /batch {
            content_by_lua_block {
                local cjson = require "cjson"
                local batch = require "koophone.batch"
                local adapter = require "koophone.sched.ngx"
                local args = ngx.req.get_uri_args()
                local n = tonumber(args.n) or 1000
                if args.adapter == "0" then adapter.uninstall() else adapter.install() end
                -- waker=0: the stepping driver; slack=0: sleeps not rounded
                -- (the benches' before and after, in one worker)
                adapter.use_waker = args.waker ~= "0"
                require("koophone.loop").slack = tonumber(args.slack) or 0.01
                local ids = {}
                for i = 0, n - 1 do ids[#ids + 1] = string.format("kp%06d", i) end
                local t0 = ngx.now()
                local rep, _, err = batch.run(KP_CLIENT, "echo hi", ids,
                    { concurrency = tonumber(args.concurrency) or 16 })
                adapter.install()
                if not rep then
                    ngx.status = 500
                    ngx.say(cjson.encode { error = tostring(err and err.message or err) })
                    return
                end
                local seen, distinct = {}, 0
                for _, row in ipairs(rep.rows) do
                    if not seen[row.id] then seen[row.id] = true; distinct = distinct + 1 end
                end
                local s = rep.summary
                ngx.say(cjson.encode {
                    total = s.total, ok = s.ok, failed = s.failed, error = s.error,
                    timeout = s.timeout, requests = s.requests, elapsed = s.elapsed,
                    rows = #rep.rows, distinct = distinct, wall = ngx.now() - t0,
                })
            }
        }
    }
}
]]

local Host = {}
Host.__index = Host

local function q(s) return string.format("%q", s) end

-- opts: emu (required), workers (1), build ("build/luajit"), cpus (the CPUs
-- nginx may run on, as taskset takes them: "1"), repo (the tree whose lua/
-- and build/ nginx loads: this one; another lets a bench compare two)
function M.start(opts)
  local emu = assert(opts.emu, "emu")
  local repo = opts.repo or emulator.repo
  local tmp = (os.getenv("TMPDIR") or "/tmp"):gsub("/$", "")
  for _ = 1, 20 do
    local port = 20000 + math.random(0, 40999)
    local prefix = tmp .. "/koophone-host-" .. port
    local conf = CONF
    local subst = {
      WORKERS = tostring(opts.workers or 1), REPO = repo, BUILD = opts.build or "build/luajit",
      CJSON = CJSON_51, TOKEN = q(emu.token), URL = q(emu.url), PROJECT = q(emu.project_id),
      PORT = tostring(port),
    }
    conf = conf:gsub("@(%u+)@", function(k) return subst[k] end)
    run("rm -rf " .. shq(prefix) .. " && mkdir -p " .. shq(prefix .. "/conf") .. " " ..
        shq(prefix .. "/logs") .. " " .. shq(prefix .. "/tmp"))
    local f = assert(io.open(prefix .. "/conf/nginx.conf", "wb"))
    f:write(conf); f:close()
    local pin = opts.cpus and ("taskset -c " .. shq(opts.cpus) .. " ") or ""
    local out, rc = run(pin .. "nginx -p " .. shq(prefix) .. " -c conf/nginx.conf -e logs/error.log 2>&1")
    if rc == 0 then
      local self = setmetatable({ url = "http://127.0.0.1:" .. port, port = port, prefix = prefix }, Host)
      -- wait until it answers
      for _ = 1, 50 do
        local code = run("curl -s -o /dev/null -w '%{http_code}' " .. shq(self.url .. "/ping"))
        if code == "204" then return self end
        run("sleep 0.1")
      end
      local log = self:error_log()
      self:stop()
      error("host nginx did not answer: " .. log)
    end
    if not out:match("Address already in use") then
      run("rm -rf " .. shq(prefix))
      error("host nginx failed to start: " .. out)
    end
    run("rm -rf " .. shq(prefix))
  end
  error("no free port for the host nginx after 20 tries")
end

function Host:error_log()
  local f = io.open(self.prefix .. "/logs/error.log", "rb")
  if not f then return "" end
  local s = f:read("*a"); f:close()
  return s
end

-- the shell command that sends nginx's signal `what` (stop, quit, reload)
local function signal_command(self, what)
  return "nginx -p " .. shq(self.prefix) .. " -c conf/nginx.conf -e logs/error.log -s " .. what .. " >/dev/null 2>&1"
end

--- Sends nginx's signal `what` ("quit", "reload", ...) to this host.
function Host:signal(what)
  run(signal_command(self, what))
end

--- The pid (a string) of the host's worker (its first, with several), or nil.
function Host:worker()
  local f = io.open(self.prefix .. "/logs/nginx.pid", "rb")
  if not f then return nil end
  local master = f:read("*l")
  f:close()
  return master and run("pgrep -P " .. master):match("%d+")
end

function Host:stop()
  if self.stopped then return end
  self.stopped = true
  run(signal_command(self, "stop") .. "; " ..
      "for i in $(seq 50); do [ -e " .. shq(self.prefix .. "/logs/nginx.pid") .. " ] || break; sleep 0.1; done; " ..
      "rm -rf " .. shq(self.prefix))
end

--- A pinger: sequential /ping requests over one keep-alive connection,
-- kept from one `probe` to the next (a new connection would put a TCP
-- handshake into the first sample of every window). Measured with
-- koophone's own engine.
local Pinger = {}
Pinger.__index = Pinger

function Host:pinger()
  local core = require "koophone.core"
  return setmetatable({ host = self, engine = core.engine(), other = core.engine(),
                        ping = { url = self.url .. "/ping", method = "GET", timeout = 10000 } }, Pinger)
end

--- Sequential /ping latencies (seconds): `n` of them, or, with `path`, as
-- many as fit while a GET of `path` (e.g. "/batch?n=1000") runs on a
-- second connection, to this host or to host `at`. Returns the samples
-- and, with `path`, that response `{status, body}`.
function Pinger:probe(n, path, at)
  local core = require "koophone.core"
  local engine, engine2 = self.engine, self.other
  -- its own engine: curl would make a ping wait (PIPEWAIT) for this
  -- connection's first response before opening a second one
  local other = path and engine2:submit { url = (at or self.host).url .. path, method = "GET", timeout = 120000 }
  local samples = {}
  while true do
    engine2:perform()
    if other and other:done() then break end
    if not other and #samples >= n then break end
    local t0 = core.now()
    local req = engine:submit(self.ping)
    repeat
      engine:perform()
      engine2:perform()
      if not req:done() then engine:wait(1) end
    until req:done()
    local res = req:response()
    assert(res and res.status == 204, "ping failed")
    samples[#samples + 1] = core.now() - t0
  end
  if other then return samples, other:response() end
  return samples
end

function Pinger:close()
  self.engine:close()
  self.other:close()
end

--- `Host:pinger():probe(n, path, at)` with a pinger of its own.
function Host:probe(n, path, at)
  local p = self:pinger()
  local samples, res = p:probe(n, path, at)
  p:close()
  return samples, res
end

--- `handlers` requests follow one `secs`-second task at once (each its own
-- task:wait in its own handler); returns the worker's wake-ups over that
-- time: `{wakeups=, wall=, per_second=, answers=}` (answers: "rows polls"
-- lines, one per handler).
function Host:follow(secs, handlers)
  local core = require "koophone.core"
  local id = run("curl -s " .. shq(self.url .. "/task?n=10&secs=" .. secs)):match("%S+")
  assert(id and id ~= "", "no task id")
  run("curl -s -o /dev/null " .. shq(self.url .. "/wakeups"))
  local urls = {}
  for i = 1, handlers do urls[i] = shq(self.url .. "/follow?id=" .. id .. "&h=" .. i) end
  local t0 = core.now()
  local out = run("curl -s --no-progress-meter --parallel --parallel-immediate --parallel-max " .. handlers .. " " ..
    table.concat(urls, " ") .. " 2>/dev/null")
  local wall = core.now() - t0
  local cjson = require "cjson"
  local w = cjson.decode((run("curl -s " .. shq(self.url .. "/wakeups"))))
  -- the adapter counts its own (driver, parked and sleeping handlers);
  -- an adapter without counts polls with ngx.sleep, counted by the host
  local wakeups = (w.driver + w.handlers > 0) and (w.driver + w.handlers) or w.sleeps
  local answers = {}
  for l in out:gmatch("[^\n]+") do answers[#answers + 1] = l end
  return { wakeups = wakeups, wall = wall, per_second = wakeups / wall, answers = answers,
           driver = w.driver, handlers = w.handlers, sleeps = w.sleeps }
end

function M.percentile(samples, p)
  local s = {}
  for i, v in ipairs(samples) do s[i] = v end
  table.sort(s)
  if #s == 0 then return nil end
  local k = math.max(1, math.min(#s, math.ceil(#s * p)))
  return s[k]
end

return M
