--- koophone: drive fleets of cloud phones (KooPhone and CPH) from Lua.
--
--     local koophone = require "koophone"
--     local client = assert(koophone.new { token = os.getenv("KOOPHONE_TOKEN") })
--     local rows = assert(client:sync_command("getprop ro.build.version.release", { "a44uhlf7" }))
--
-- See README.md for a tour; each module documents its part:
-- `koophone.client` (endpoints), `koophone.task` (polling),
-- `koophone.batch` (whole fleets), `koophone.sched` (waiting),
-- `koophone.errors` (the error shape), `koophone.rows` (the result shape).
-- @module koophone
local client = require "koophone.client"
local sched = require "koophone.sched"
local core = require "koophone.core"

local M = {}

--- The version, e.g. "0.1.0".
M.VERSION = client.VERSION
--- "koophone 0.1.0", in the style of Lua's own `_VERSION`.
M._VERSION = "koophone " .. client.VERSION
--- JSON null as it appears in decoded bodies.
M.null = core.null

--- Creates a client; see `koophone.client.new` for the options.
-- @tparam[opt] table opts
-- @treturn Client|nil
-- @treturn ?table err
function M.new(opts) return client.new(opts) end

--- A new engine, to share between clients (`koophone.new{engine = e}`).
-- @tparam[opt] table opts `max_connections`, `max_host_connections`, `multiplex`
-- @return engine
function M.engine(opts) return core.engine(opts) end

local default_runner

--- Runs `fn(...)` as a coroutine under the default scheduler: inside it,
-- every wait of koophone yields, so many calls and tasks wait at once in one
-- thread. Nothing runs until `koophone.run()`.
-- @tparam function fn
-- @return the coroutine
function M.spawn(fn, ...)
  default_runner = default_runner or sched.runner()
  return default_runner:spawn(fn, ...)
end

--- Runs every spawned coroutine to its end (raises if one raised).
-- @tparam[opt] number timeout seconds; returns false when it ran out
-- @treturn boolean
function M.run(timeout)
  if not default_runner then return true end
  local r = default_runner
  local ok, res = pcall(r.run, r, timeout)
  if r.count == 0 or not ok then default_runner = nil end
  if not ok then error(res, 0) end
  return res
end

--- Seconds on a monotonic clock.
M.now = core.now

return M
