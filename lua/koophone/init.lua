--- koophone: drive fleets of cloud phones (KooPhone and CPH) from Lua.
--
--     local koophone = require "koophone"
--     local client = assert(koophone.new { token = os.getenv("KOOPHONE_TOKEN") })
--     local rows = assert(client:sync_command("getprop ro.build.version.release", { "a44uhlf7" }))
--
-- See README.md for a tour; each module documents its part:
-- `koophone.client` (endpoints), `koophone.fleet` (list, status, reboot,
-- reset, backup, apps, CPH phones), `koophone.task` (polling),
-- `koophone.batch` (whole fleets), `koophone.loop` and `koophone.sched` (waiting),
-- `koophone.errors` (the error shape), `koophone.rows` (the result shape).
-- @module koophone
local client = require "koophone.client"
local loop = require "koophone.loop"
local core = require "koophone.core"
local errors = require "koophone.errors"
local validate = require "koophone.validate"

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
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (a validation error naming the option)
function M.new(opts) return client.new(opts) end

local ENGINE_OPTIONS = validate.set { "max_connections", "max_host_connections", "multiplex", "pool" }

--- A new engine, to share between clients (`koophone.new{engine = e}`).
-- @tparam[opt] table opts `max_connections`, `max_host_connections`
--   (0: no limit), `multiplex` (HTTP/2, default true), `pool` (reset
--   handles kept for reuse, default 256)
-- @return engine
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure: a validation error naming the option
function M.engine(opts)
  if opts ~= nil then
    if type(opts) ~= "table" then return errors.fail(errors.validation("opts", "must be a table")) end
    local ok, err = validate.known_keys("engine option", opts, ENGINE_OPTIONS)
    for _, k in ipairs { "max_connections", "max_host_connections", "pool" } do
      if ok and opts[k] ~= nil then ok, err = validate.integer(k, opts[k], 0, 100000) end
    end
    if ok and opts.multiplex ~= nil and type(opts.multiplex) ~= "boolean" then
      ok, err = nil, errors.validation("multiplex", "must be true or false")
    end
    if not ok then return errors.fail(err) end
  end
  return core.engine(opts)
end

--- Runs `fn(...)` as a coroutine of the default loop (`koophone.loop`):
-- inside it, every wait of koophone yields, so many calls and tasks wait
-- at once in one thread. Nothing runs until `koophone.run()` (or
-- `koophone.step()`).
-- @tparam function fn
-- @return the coroutine
function M.spawn(fn, ...)
  return loop.default():spawn(fn, ...)
end

--- Runs every spawned coroutine to its end (raises if one raised),
-- sleeping in the engines' poll between events.
-- @tparam[opt] number timeout seconds; returns false when it ran out
-- @treturn boolean
function M.run(timeout)
  local l = loop.default()
  local ok, res = pcall(l.run, l, timeout)
  if not ok then
    loop.forget_default() -- as before: a failed run leaves nothing behind
    error(res, 0)
  end
  return res
end

--- One pass of the default loop that never blocks, for a game's frame
-- loop: resumes every spawned coroutine whose request finished or whose
-- time came.
-- @treturn integer spawned coroutines still alive
function M.step()
  return loop.default():step()
end

--- Seconds on a monotonic clock.
M.now = core.now

return M
