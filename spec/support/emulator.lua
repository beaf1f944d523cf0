-- Start and drive a koophone emulator from specs (Lua 5.1-5.4, LuaJIT).
--
--   local emulator = require "spec.support.emulator"
--   local emu = emulator.start{ scenario = { durations = { default = 0.3 } }, tls = false }
--   ... emu.url, emu.token, emu.project_id, emu.prefix, emu.cert (tls only)
--   local status, body, headers, info = emu:call("POST", "/v1/instances/sync-command", {...})
--   emu:stop()
--
-- HTTP goes through the curl command (io.popen), JSON through lua-cjson.
local cjson = require "cjson"

local M = {}

local function script_dir()
  local src = debug.getinfo(1, "S").source
  if src:sub(1, 1) == "@" then
    local dir = src:sub(2):match("^(.*)/[^/]*$")
    return dir or "."
  end
  return "spec/support"
end

local function abspath(p)
  if p:sub(1, 1) == "/" then return p end
  local pwd = os.getenv("PWD")
  if not pwd then
    local h = io.popen("pwd"); pwd = h:read("*l"); h:close()
  end
  return pwd .. "/" .. p
end

-- the repository root (two levels above this file), or KOOPHONE_REPO
M.repo = os.getenv("KOOPHONE_REPO") or (abspath(script_dir()) .. "/../..")
M.script = M.repo .. "/bin/koophone-emulator"

local function shq(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.shell_quote = shq

local function tmpname()
  local n = os.tmpname()
  -- os.tmpname creates the file on POSIX; keep it and reuse the name
  return n
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a"); f:close()
  return s
end

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data); f:close()
end

-- run a shell command, return its stdout and exit status (number)
local function run(cmd)
  -- sanitizer preloads (make asan) are for the process under test, not for
  -- nginx or curl started from here
  local h = assert(io.popen("unset LD_PRELOAD; " .. cmd .. "; echo \"__rc=$?\""))
  local out = h:read("*a")
  h:close()
  local rc = tonumber(out:match("__rc=(%d+)%s*$")) or -1
  out = out:gsub("__rc=%d+%s*$", "")
  return out, rc
end
M.run = run

--- The shell words that start a Lua interpreter for a child script with the
-- build under test (keeps a sanitizer preload for children: make asan).
function M.lua_command()
  local lua = os.getenv("KOOPHONE_SPEC_LUA") or "lua5.4"
  local preload = os.getenv("KOOPHONE_CHILD_PRELOAD")
  if preload and preload ~= "" then return "LD_PRELOAD=" .. shq(preload) .. " " .. lua end
  return lua
end

local function decode(s)
  if s == nil or s == "" then return nil end
  local ok, v = pcall(cjson.decode, s)
  if ok then return v end
  return nil
end
M.decode = decode
M.null = cjson.null

local request_counter = 0
local function new_request_id()
  request_counter = request_counter + 1
  return string.format("spec-%d-%d-%d", os.time(), math.random(1, 1e9), request_counter)
end

local Emu = {}
Emu.__index = Emu

-- Raw HTTP call. body: a table (JSON-encoded) or a string (sent as is) or nil.
-- headers: name -> value; defaults X-Auth-Token (emu.token), x-request-id (generated),
-- Content-Type (with a body); a value of false removes a default header.
-- opts: {timeout = seconds (default 30), http2 = true, http1 = true, url = full URL,
--        curl = "extra curl args", no_auth = true}
-- Returns status (number, 0 when curl got no response), decoded body (table, or
-- the raw string when it is not JSON), headers (lower-cased names), info
-- {rc = curl exit code, raw = body string, http_version = "1.1"|"2", time = seconds}.
function Emu:call(method, path, body, headers, opts)
  opts = opts or {}
  local h = { ["X-Auth-Token"] = self.token, ["x-request-id"] = new_request_id() }
  if body ~= nil then h["Content-Type"] = "application/json" end
  if opts.no_auth then h["X-Auth-Token"] = nil end
  local given = {}
  for k in pairs(headers or {}) do given[k:lower()] = true end
  for dk in pairs(h) do
    if given[dk:lower()] then h[dk] = nil end
  end
  for k, v in pairs(headers or {}) do
    if v ~= false then h[k] = v end
  end
  local base = tmpname()
  local bodyfile, hdrfile, outfile = base .. ".req", base .. ".hdr", base .. ".out"
  local args = { "curl -sS -o " .. shq(outfile) .. " -D " .. shq(hdrfile),
                 "-w '%{http_code} %{http_version} %{time_total}'",
                 "--max-time " .. tostring(opts.timeout or 30),
                 "-X " .. shq(method) }
  if self.cert then args[#args + 1] = "--cacert " .. shq(self.cert) end
  if opts.http2 then args[#args + 1] = "--http2" end
  if opts.http1 then args[#args + 1] = "--http1.1" end
  for k, v in pairs(h) do args[#args + 1] = "-H " .. shq(k .. ": " .. v) end
  if body ~= nil then
    if type(body) == "table" then body = cjson.encode(body) end
    write_file(bodyfile, body)
    args[#args + 1] = "--data-binary @" .. shq(bodyfile)
  end
  if opts.curl then args[#args + 1] = opts.curl end
  args[#args + 1] = shq(opts.url or (self.url .. path))
  local out, rc = run(table.concat(args, " ") .. " 2>/dev/null")
  local code, ver, t = out:match("(%d+) (%S+) (%S+)")
  local raw = read_file(outfile) or ""
  local hdr = {}
  for line in (read_file(hdrfile) or ""):gmatch("[^\r\n]+") do
    local k, v = line:match("^([^:%s]+):%s*(.-)%s*$")
    if k then hdr[k:lower()] = v end
  end
  os.remove(base); os.remove(bodyfile); os.remove(hdrfile); os.remove(outfile)
  local decoded = decode(raw)
  if decoded == nil and raw ~= "" then decoded = raw end
  return tonumber(code) or 0, decoded, hdr, { rc = rc, raw = raw, http_version = ver, time = tonumber(t) }
end

-- control API call: returns decoded JSON (or raw string), status
function Emu:control(method, path, body)
  if path:sub(1, 1) ~= "/" then path = "/" .. path end
  if path:sub(1, 11) ~= "/_emulator/" then path = "/_emulator" .. path end
  local status, decoded = self:call(method, path, body, { ["X-Auth-Token"] = false, ["x-request-id"] = false })
  return decoded, status
end

local function query(t)
  if type(t) == "string" then return t ~= "" and ("?" .. t) or "" end
  if type(t) ~= "table" or next(t) == nil then return "" end
  local parts = {}
  for k, v in pairs(t) do parts[#parts + 1] = k .. "=" .. tostring(v) end
  table.sort(parts)
  return "?" .. table.concat(parts, "&")
end

function Emu:reset() return (self:control("POST", "/_emulator/reset")) end
function Emu:requests(q) return (self:control("GET", "/_emulator/requests" .. query(q))) end
function Emu:executions(q)
  if type(q) == "string" then q = { instance = q } end
  return (self:control("GET", "/_emulator/executions" .. query(q)))
end
function Emu:stats() return (self:control("GET", "/_emulator/stats")) end
function Emu:add_fault(f) return (self:control("POST", "/_emulator/faults", f)) end
function Emu:faults() return (self:control("GET", "/_emulator/faults")) end
function Emu:clear_faults() return (self:control("DELETE", "/_emulator/faults")) end
function Emu:config(partial)
  if partial == nil then return (self:control("GET", "/_emulator/config")) end
  return (self:control("POST", "/_emulator/config", partial))
end
function Emu:error_log() return read_file(self.prefix .. "/logs/error.log") or "" end

function Emu:stop()
  if self.stopped then return end
  self.stopped = true
  run(shq(M.script) .. " stop " .. shq(self.url) .. " >/dev/null 2>&1")
  if self.scenario_file then os.remove(self.scenario_file) end
end

-- opts: scenario (table or path), tls, token, fleet, workers, port, project_id, cpus
function M.start(opts)
  opts = opts or {}
  local args = { shq(M.script), "start" }
  local scenario_file
  if type(opts.scenario) == "table" then
    scenario_file = tmpname()
    write_file(scenario_file, cjson.encode(opts.scenario))
    args[#args + 1] = "--scenario " .. shq(scenario_file)
  elseif type(opts.scenario) == "string" then
    args[#args + 1] = "--scenario " .. shq(opts.scenario)
  end
  if opts.tls then args[#args + 1] = "--tls" end
  if opts.token then args[#args + 1] = "--token " .. shq(opts.token) end
  if opts.project_id then args[#args + 1] = "--project-id " .. shq(opts.project_id) end
  if opts.fleet then args[#args + 1] = "--fleet " .. tostring(opts.fleet) end
  if opts.workers then args[#args + 1] = "--workers " .. tostring(opts.workers) end
  args[#args + 1] = "--port " .. tostring(opts.port or 0)
  local errfile = tmpname()
  -- opts.cpus ("0"): the emulator's nginx only on those CPUs (taskset), for
  -- benches that keep it off the cores of the process they measure
  local pin = opts.cpus and ("taskset -c " .. shq(opts.cpus) .. " ") or ""
  local out, rc = run(pin .. table.concat(args, " ") .. " 2>" .. shq(errfile))
  local err = read_file(errfile) or ""
  os.remove(errfile)
  local url = out:match("(https?://[%w%.:%-]+)")
  if rc ~= 0 or not url then
    if scenario_file then os.remove(scenario_file) end
    error("koophone-emulator failed to start (rc " .. tostring(rc) .. "): " .. err .. out, 2)
  end
  local port = url:match(":(%d+)$")
  local tmp = (os.getenv("TMPDIR") or "/tmp"):gsub("/$", "")
  local self = setmetatable({
    url = url, port = tonumber(port), prefix = tmp .. "/koophone-emulator-" .. port,
    scenario_file = scenario_file,
  }, Emu)
  if opts.tls then self.cert = self.prefix .. "/cert.pem" end
  local cfg = self:control("GET", "/_emulator/config")
  if type(cfg) ~= "table" then
    self:stop()
    error("koophone-emulator started at " .. url .. " but /_emulator/config did not answer", 2)
  end
  self.token = cfg.token
  self.project_id = cfg.project_id
  self.config_at_start = cfg
  -- stop it when the object is collected (Lua 5.2+) as a safety net
  if _VERSION ~= "Lua 5.1" then
    local mt = getmetatable(self)
    if not mt.__gc then mt.__gc = function(o) pcall(Emu.stop, o) end end
  end
  return self
end

return M
