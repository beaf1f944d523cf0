-- bench/batch_cpu.lua: CPU per 1,000-instance async batch (the OpenResty
-- bench's batch: `echo hi`, concurrency 16, 20 ms replies, 0.5 s jobs),
-- in whichever Lua runs it. What a batch costs the process that runs it,
-- e.g. an nginx worker (LuaJIT).
--
--   lua5.4 bench/batch_cpu.lua [batches=10] [n=1000]
--   LUA_CPATH="build/luajit/?.so;/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;;" luajit bench/batch_cpu.lua
--   (from the repo root, LUA_PATH="lua/?.lua;lua/?/init.lua;./?.lua;;")
--
-- CPU is os.clock() over the batches (curl's work included); the first
-- batch, which loads modules and warms up, is left out. Prints one line.
package.path = "lua/?.lua;lua/?/init.lua;./?.lua;" .. package.path
local emulator = require "spec.support.emulator"
local koophone = require "koophone"
local batch = require "koophone.batch"

local opt = require("bench.args")(arg)
local batches, n = opt.batches or 10, opt.n or 1000

local emu = emulator.start { scenario = { latency = { default = 0.02 }, durations = { default = 0.5 } } }
local ok, err = pcall(function()
  local c = assert(koophone.new { token = emu.token, endpoint = emu.url, cph_endpoint = emu.url,
                                  project_id = emu.project_id, poll_interval = 0.1 })
  local ids = {}
  for i = 0, n - 1 do ids[#ids + 1] = ("kp%06d"):format(i) end
  local function one()
    local rep = assert(batch.run(c, "echo hi", ids, { concurrency = 16 }))
    assert(rep.summary.ok == n, tostring(rep))
  end
  one()
  local t0 = os.clock()
  for _ = 1, batches do one() end
  print(("%s: %.1f ms CPU per %d-instance batch (%d batches)"):format(
    rawget(_G, "jit") and jit.version or _VERSION, (os.clock() - t0) * 1000 / batches, n, batches))
end)
emu:stop()
if not ok then error(err, 0) end
