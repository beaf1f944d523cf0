-- bench/ngx_wakeups.lua: how often an nginx worker wakes while `handlers`
-- requests each wait (task:wait) on one `secs`-second task.
--
--   lua5.4 bench/ngx_wakeups.lua [secs=30] [handlers=100]   (from the repo root;
--   needs build/luajit/koophone/core.so: make luajit-core)
--
-- Wake-ups: the adapter's own counts (driver sleeps that ended, parked
-- handlers woken, handler sleeps), or, for an adapter without counts, every
-- ngx.sleep of the worker. Prints one RESULT line.
package.path = "lua/?.lua;lua/?/init.lua;./?.lua;" .. package.path
local emulator = require "spec.support.emulator"
local ngx_host = require "spec.support.ngx_host"
local cjson = require "cjson"

local opt = require("bench.args")(arg)
local secs, handlers = opt.secs or 30, opt.handlers or 100

local emu = emulator.start { scenario = { latency = { default = 0.02 } } }
local ok, host = pcall(ngx_host.start, { emu = emu, workers = 1 })
if not ok then emu:stop() error(host) end
local r = host:follow(secs, handlers)
host:stop()
emu:stop()
io.write("RESULT ", cjson.encode { secs = secs, handlers = handlers, wakeups = r.wakeups, wall = r.wall,
  per_second = r.per_second, driver = r.driver, handler_wakeups = r.handlers, sleeps = r.sleeps,
  answered = #r.answers, first_answer = r.answers[1] }, "\n")
