--- The `koophone` command line, as a module: `bin/koophone` only calls
-- `cli.main(arg)`, and specs call `main` in-process with their own
-- environment and streams.
--
--     koophone run "getprop ro.product.model" kp000000 kp000001
--     koophone run --mode sync --ids-file ids.txt "echo hi" --format csv
--     KOOPHONE_PACKAGE_URL=... koophone install --app app.json --ids-file ids.txt
--     koophone restart --image-id img-1 ph000000 ph000001
--     koophone resume install.jsonl
--     koophone task ZGCA... --follow ; koophone job JOB_ID ; koophone --version
--     koophone instances --status running --format csv ; koophone status kp000001
--     koophone apps kp000001 ; koophone reboot|reset|backup --ids-file ids.txt
--
-- Configuration, first found wins: flags; the environment (`KOOPHONE_TOKEN`,
-- `KOOPHONE_ENDPOINT`, `KOOPHONE_CPH_ENDPOINT`, `KOOPHONE_PROJECT_ID`, ...);
-- `--config FILE` (a Lua file returning a table, or a JSON object, with the
-- keys of `koophone.new` plus `concurrency`, `rate`, `timeout`, `format`).
-- Secrets never come from a flag, since flags show in `ps`: the token comes
-- from the environment or the config file; so do AK/SK
-- (`HUAWEICLOUD_SDK_AK`, `HUAWEICLOUD_SDK_SK`, `HUAWEICLOUD_SDK_SECURITY_TOKEN`,
-- `HUAWEICLOUD_SDK_PROJECT_ID`, or the config file's `ak`, `sk`,
-- `security_token`); the signed package URL of an install comes from
-- `KOOPHONE_PACKAGE_URL`, `--package-url-file FILE` or the `--app` file.
-- None of them is ever printed. `--region` picks the endpoints.
--
-- Exit status: 0 every id ok, 1 some id not ok, 2 usage or configuration
-- error, and also when the first request is refused (HTTP 401 or 403): then
-- nothing more is sent and one line says why.
--
-- Subcommands live in `cli.commands` (name -> `{help, setup, run}`), in the
-- order of `cli.order`: a new one is one more `command(...)` call below.
-- @module koophone.cli
local argparse = require "argparse"
local cjson = require("cjson").new()
local koophone = require "koophone"
local batch = require "koophone.batch"
local errors = require "koophone.errors"
local report_mod = require "koophone.report"
local validate = require "koophone.validate"

local M = {}

--- Subcommands by name: `{help = string, setup = function(cmd_parser),
-- run = function(ctx, args) -> exit code}`.
M.commands = {}

--- Subcommand names, in the order the help lists them.
M.order = {}

local function command(name, help, setup, run)
  M.commands[name] = { help = help, setup = setup, run = run }
  M.order[#M.order + 1] = name
end

-- exits ----------------------------------------------------------------------

-- `ctx:exit(code)` unwinds to `main` with this; argparse turns what its
-- actions raise into a string, so the string form is recognised too.
local Exit = {}
Exit.__tostring = function(e) return "koophone.cli exit " .. e.code end

local function exit_code(e)
  if getmetatable(e) == Exit then return e.code end
  if type(e) == "string" then return tonumber(e:match("^koophone%.cli exit (%d+)")) end
  return nil
end

-- Failures are `nil, message, err` (koophone.errors): exit 2 for bad input
-- and refused credentials (HTTP 401, 403), 1 for the rest.
local function status_of(err)
  if type(err) ~= "table" then return 1 end
  if err.kind == "validation" or err.http_status == 401 or err.http_status == 403 then return 2 end
  return 1
end

-- the context: streams, environment, secrets -----------------------------------

local Ctx = {}
Ctx.__index = Ctx

function Ctx:scrub(s) return (errors.scrub(tostring(s), self.secrets)) end

function Ctx:out(s) self.stdout:write(self:scrub(s)) end

-- one line on stderr, scrubbed
function Ctx:say(...)
  local parts = {}
  for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
  self.stderr:write(self:scrub(table.concat(parts)), "\n")
end

function Ctx.exit(_, code) error(setmetatable({ code = code }, Exit), 0) end

-- "koophone: <message>" on stderr, then the exit status
function Ctx:die(code, ...)
  local parts = {}
  for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
  local msg = table.concat(parts):gsub("^koophone: ", "")
  self:say("koophone: ", msg)
  self:exit(code)
end

function Ctx:secret(s)
  if type(s) == "string" and s ~= "" then self.secrets[#self.secrets + 1] = s end
end

function Ctx:getenv(name)
  local v = self.env(name)
  if v == "" then return nil end
  return v
end

local function shell_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

-- Warns when a file that holds a secret can be read by anyone.
function Ctx:check_private(path, what)
  local h = io.popen("stat -c %a " .. shell_quote(path) .. " 2>/dev/null")
  local mode = h and h:read("*l")
  if h then h:close() end
  local other = mode and tonumber(mode:sub(-1))
  if other and other % 8 >= 4 then
    self:say("koophone: warning: ", what, " ", path, " is world-readable (mode ", mode,
             "); it may hold a secret: chmod o-r it")
  end
end

-- config files -------------------------------------------------------------------

-- A Lua chunk with an empty environment (Lua 5.1 and LuaJIT: loadstring + setfenv).
local function load_lua(text, name)
  if rawget(_G, "setfenv") then
    if text:byte(1) == 27 then return nil, "binary chunks are not accepted" end
    local f, err = loadstring(text, name) -- luacheck: ignore 113 (Lua 5.1)
    if f then setfenv(f, {}) end
    return f, err
  end
  return load(text, name, "t", {})
end

function Ctx:load_config(path)
  local text, err = read_file(path)
  if not text then self:die(2, "cannot read config ", path, ": ", err) end
  self:check_private(path, "config file")
  local cfg
  if text:match("^%s*{") then
    local ok, v = pcall(cjson.decode, text)
    if not ok or type(v) ~= "table" then self:die(2, "config ", path, " is not a JSON object") end
    cfg = v
  else
    local chunk, lerr = load_lua(text, "@" .. path)
    if not chunk then self:die(2, "config ", path, ": ", lerr) end
    local ok, v = pcall(chunk)
    if not ok or type(v) ~= "table" then self:die(2, "config ", path, " must return a table") end
    cfg = v
  end
  for k, v in pairs(cfg) do if v == cjson.null then cfg[k] = nil end end
  return cfg
end

-- flag, then environment variable, then config file key
function Ctx:pick(flag, env, key)
  if flag ~= nil then return flag end
  if env and self:getenv(env) then return self:getenv(env) end
  return self.cfg[key]
end

function Ctx:number(name, v)
  if v == nil then return nil end
  local n = tonumber(v)
  if not n then self:die(2, "--", name, " must be a number, got ", v) end
  return n
end

-- ids ------------------------------------------------------------------------------

local function add_ids_from(text, list)
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    line = line:gsub("#.*$", "")
    for id in line:gmatch("[^%s,]+") do list[#list + 1] = id end
  end
end

function Ctx:ids(args)
  local list = {}
  local stdin_used = false
  local function from_stdin()
    if stdin_used then return end
    stdin_used = true
    add_ids_from(self.stdin:read("*a") or "", list)
  end
  if args.ids_file then
    if args.ids_file == "-" then from_stdin()
    else
      local text, err = read_file(args.ids_file)
      if not text then self:die(2, "cannot read ids file ", args.ids_file, ": ", err) end
      add_ids_from(text, list)
    end
  end
  for _, id in ipairs(args.ids or {}) do
    if id == "-" then from_stdin() else add_ids_from(id, list) end
  end
  if #list == 0 then self:die(2, "no ids given (arguments, --ids-file FILE, or - for stdin)") end
  return list
end

-- progress -----------------------------------------------------------------------

-- Sets ctx.show (called with {done, total, ok, failed, error, timeout, rate,
-- eta}), ctx.show_interval and ctx.end_progress(keep): a bar on a terminal;
-- otherwise a line every 2 s, none in the first 2 s, and the last state at
-- the end; nothing with --quiet. `end_progress(false)` leaves no trace (the
-- run ends with one line of its own).
function Ctx:progress(quiet)
  self.end_progress = function() end
  if quiet then return end
  local err = self.stderr
  local started, pending = koophone.now(), nil
  if self.tty then
    local drawn = false
    self.show = function(p)
      local width = 30
      local frac = p.total > 0 and p.done / p.total or 1
      local fill = math.floor(frac * width + 0.5)
      local eta = p.eta and ("eta %ds"):format(math.ceil(p.eta)) or "eta ?"
      err:write(("\r[%s%s] %3d%% %d/%d  ok %d  failed %d  error %d  timeout %d  %.1f/s  %s\27[K"):format(
        string.rep("#", fill), string.rep(".", width - fill), math.floor(frac * 100),
        p.done, p.total, p.ok, p.failed, p.error, p.timeout, p.rate or 0, eta))
      err:flush()
      drawn = true
    end
    self.show_interval = 0.2
    self.end_progress = function(keep)
      if drawn then err:write(keep and "\n" or "\r\27[K") end
      drawn = false
    end
    return
  end
  local function line(p)
    err:write(("progress: %d/%d ok=%d failed=%d error=%d timeout=%d rate=%.1f/s\n"):format(
      p.done, p.total, p.ok, p.failed, p.error, p.timeout, p.rate or 0))
    err:flush()
  end
  self.show_interval = 2
  self.show = function(p)
    pending = p
    if koophone.now() - started >= self.show_interval then
      line(p)
      pending = nil
    end
  end
  self.end_progress = function(keep)
    if keep and pending then line(pending) end
    pending = nil
  end
end

-- output -------------------------------------------------------------------------

function Ctx:emit(report)
  if self.format == "json" then
    -- lua-cjson writes "/" as "\/": undone (still JSON) so that URLs are
    -- recognised and their query strings scrubbed like everywhere else
    self:out(report:to_json():gsub("\\/", "/") .. "\n")
  elseif self.format == "csv" then
    self:out(report:to_csv())
  else
    self:out(report:to_table())
    self:out(tostring(report) .. "\n")
  end
end

-- Ends a command with a report (or its error): output, summary, exit status.
function Ctx:finish(report, message, err)
  self.end_progress(report and not report.aborted)
  if not report then self:die(status_of(err), message) end
  local refused = report.aborted
  if refused then
    -- one line, not a row per id: nothing could run with these credentials
    local any_ran = false
    for _, row in ipairs(report.rows) do if row.status ~= "error" then any_ran = true end end
    if any_ran then self:emit(report) end
    self:die(2, "stopped: the first request was refused (", tostring(refused),
             "); nothing more was sent. Check the credentials (KOOPHONE_TOKEN, the IAM user, or ",
             "HUAWEICLOUD_SDK_AK/SK) and the project id.")
  end
  self:emit(report)
  self:say(tostring(report))
  return report:all_ok() and 0 or 1
end

-- The batch options every batch command shares.
function Ctx:batch_opts(args)
  return {
    concurrency = self:number("concurrency", self:pick(self.args.concurrency, "KOOPHONE_CONCURRENCY", "concurrency")),
    rate = self:number("rate", self:pick(self.args.rate, "KOOPHONE_RATE", "rate")),
    timeout = self:timeout(),
    journal = self.args.journal,
    chunk = self:number("chunk", args.chunk),
    on_progress = self.show, progress_interval = self.show_interval,
    stop_on_auth_failure = true,
  }
end

function Ctx:timeout()
  return self:number("timeout", self:pick(self.args.timeout, "KOOPHONE_TIMEOUT", "timeout"))
end

-- the client -------------------------------------------------------------------------

-- Options of `koophone.new` from flags, environment and config file.
function Ctx:client_options()
  local args, cfg = self.args, self.cfg
  local token = self:pick(nil, "KOOPHONE_TOKEN", "token")
  self:secret(token)
  local o = {
    token = token,
    endpoint = self:pick(args.endpoint, "KOOPHONE_ENDPOINT", "endpoint"),
    cph_endpoint = self:pick(args.cph_endpoint, "KOOPHONE_CPH_ENDPOINT", "cph_endpoint"),
    project_id = self:pick(args.project_id, "KOOPHONE_PROJECT_ID", "project_id"),
    region = self:pick(args.region, "KOOPHONE_REGION", "region"),
    poll_interval = self:number("poll-interval",
      self:pick(args.poll_interval, "KOOPHONE_POLL_INTERVAL", "poll_interval")),
  }
  for _, k in ipairs { "iam", "ca_file", "insecure", "allow_insecure", "proxy", "retries", "timeout_per_request",
                       "connect_timeout", "max_restart", "http_version", "poll_max_interval", "task_timeout" } do
    if cfg[k] ~= nil then o[k == "timeout_per_request" and "timeout" or k] = cfg[k] end
  end
  if type(cfg.iam) == "table" then self:secret(cfg.iam.password) end
  -- AK/SK: the environment or the config file, never a flag
  local ak, sk = self:pick(nil, "HUAWEICLOUD_SDK_AK", "ak"), self:pick(nil, "HUAWEICLOUD_SDK_SK", "sk")
  if ak or sk then
    o.ak, o.sk = ak, sk
    o.security_token = self:pick(nil, "HUAWEICLOUD_SDK_SECURITY_TOKEN", "security_token")
    o.project_id = o.project_id or self:getenv("HUAWEICLOUD_SDK_PROJECT_ID")
    o.iam_endpoint = cfg.iam_endpoint
    self:secret(sk)
    self:secret(o.security_token)
  end
  return o
end

function Ctx:client()
  local client, message = koophone.new(self:client_options())
  if not client then self:die(2, message) end
  return client
end

-- the parser ---------------------------------------------------------------------------

local function batch_flags(cmd)
  cmd:option("--ids-file", "Read ids from FILE (one or more per line; - for stdin).")
  cmd:option("--chunk", "Ids per request.")
end

-- help and --version write to the context's stdout and end the run
local function with_help(ctx, p)
  p:add_help { action = function()
    ctx.stdout:write(p:get_help(), "\n")
    ctx:exit(0)
  end }
  return p
end

local function build_parser(ctx)
  local parser = with_help(ctx, argparse("koophone", "Drive fleets of cloud phones (KooPhone and CPH APIs)."))
    :epilog("Configuration: flags, then KOOPHONE_* environment variables, then --config FILE.\n" ..
            "Exit status: 0 all ok, 1 some ids not ok, 2 usage or configuration error\n" ..
            "(and when the first request is refused: HTTP 401 or 403).")
  parser:command_target("command")
  parser:flag("--version", "Print the version and exit."):action(function()
    ctx.stdout:write(koophone._VERSION, "\n")
    ctx:exit(0)
  end)
  parser:option("--config", "A Lua or JSON file with the client's options (token, endpoint, ...).")
  parser:option("--endpoint", "KooPhone endpoint URL (KOOPHONE_ENDPOINT).")
  parser:option("--cph-endpoint", "CPH endpoint URL (KOOPHONE_CPH_ENDPOINT).")
  parser:option("--project-id", "CPH project id (KOOPHONE_PROJECT_ID).")
  parser:option("--region", "Region, e.g. cn-north-4: CPH endpoint and, with AK/SK, the project id (KOOPHONE_REGION).")
  parser:option("--format", "Output format: table, json or csv."):choices { "table", "json", "csv" }
  parser:option("--concurrency", "Requests in flight at most (default 16).")
  parser:option("--rate", "Submits per second at most.")
  parser:option("--timeout", "Seconds for the whole batch (task --follow: for the wait).")
  parser:option("--poll-interval", "Seconds before a task's first status query.")
  parser:option("--journal", "Append progress to this file (see `koophone resume`).")
  parser:flag("-q --quiet", "No progress output.")
  for _, name in ipairs(M.order) do
    local c = M.commands[name]
    local cmd = with_help(ctx, parser:command(name, c.help))
    c.setup(cmd)
  end
  return parser
end

-- Secrets in flags would show in `ps`: such a flag is refused before
-- anything else, with where the secret goes instead.
local CREDENTIALS = "credentials are never taken from flags (they would show in ps); use the environment " ..
  "(KOOPHONE_TOKEN, HUAWEICLOUD_SDK_AK, HUAWEICLOUD_SDK_SK) or --config FILE"
local PACKAGE_URL = "the package URL is not taken from a flag (it would show in ps): set KOOPHONE_PACKAGE_URL, " ..
  "or put it in a file and pass --package-url-file FILE"
local SECRET_FLAGS = {
  ["--token"] = CREDENTIALS, ["--ak"] = CREDENTIALS, ["--sk"] = CREDENTIALS, ["--security-token"] = CREDENTIALS,
  ["--url"] = PACKAGE_URL, ["--package-url"] = PACKAGE_URL, ["--install-package-url"] = PACKAGE_URL,
}

-- The first secret-bearing flag in argv (up to "--"), and why it is refused.
local function secret_flag(argv)
  for _, a in ipairs(argv) do
    if a == "--" then return nil end
    local name = a:match("^(%-%-[%w%-_]+)")
    local why = name and SECRET_FLAGS[name:gsub("_", "-")]
    if why and (a == name or a:sub(#name + 1, #name + 1) == "=") then return name, why end
  end
  return nil
end

-- the subcommands ----------------------------------------------------------------------

command("run", "Run a command on instances.", function(cmd)
  cmd:argument("cmd", "The command, e.g. \"getprop ro.product.model\".")
  cmd:argument("ids", "Instance ids (- reads stdin)."):args("*")
  cmd:option("--mode", "async (default: async-command and polling) or sync (sync-command, quick commands).")
    :choices { "sync", "async" }
  batch_flags(cmd)
end, function(ctx, args)
  local client = ctx:client()
  local ids = ctx:ids(args)
  local opts = ctx:batch_opts(args)
  opts.mode = args.mode or ctx.cfg.mode or "async"
  return ctx:finish(batch.run(client, args.cmd, ids, opts))
end)

-- The signed package URL: --package-url-file, then KOOPHONE_PACKAGE_URL, then the --app file.
local function package_url(ctx, args, app)
  if args.package_url_file then
    local text, err = read_file(args.package_url_file)
    if not text then ctx:die(2, "cannot read --package-url-file ", args.package_url_file, ": ", err) end
    ctx:check_private(args.package_url_file, "package URL file")
    local url = text:match("^%s*(%S+)")
    if not url then ctx:die(2, "--package-url-file ", args.package_url_file, " is empty") end
    return url
  end
  return ctx:getenv("KOOPHONE_PACKAGE_URL") or app.install_package_url
end

-- The install description: the --app file, with the signed package URL.
local function read_app(ctx, args)
  local app = {}
  if args.app then
    local text, err = read_file(args.app)
    if not text then ctx:die(2, "cannot read ", args.app, ": ", err) end
    local okj, v = pcall(cjson.decode, text)
    if not okj or type(v) ~= "table" then ctx:die(2, args.app, " is not a JSON object") end
    app = v
  end
  app.install_package_url = package_url(ctx, args, app)
  ctx:secret(app.install_package_url)
  return app
end

command("install", "Install an app on instances. The signed package URL comes from KOOPHONE_PACKAGE_URL, " ..
        "--package-url-file or the --app file, never from a flag.", function(cmd)
  cmd:argument("ids", "Instance ids (- reads stdin)."):args("*")
  cmd:option("--app", "A JSON file with the install fields (object_name, file_name, ...).")
  cmd:option("--package-url-file", "A file whose first line is install_package_url (instead of KOOPHONE_PACKAGE_URL).")
  cmd:option("--object-name", "object_name.")
  cmd:option("--file-name", "file_name.")
  cmd:option("--object-version", "object_version.")
  cmd:option("--object-size", "object_size (MB).")
  cmd:flag("--fast", "fast_install = 1.")
  batch_flags(cmd)
end, function(ctx, args)
  local app = read_app(ctx, args)
  app.object_name = args.object_name or app.object_name
  app.file_name = args.file_name or app.file_name
  app.object_version = args.object_version or app.object_version
  app.object_size = ctx:number("object-size", args.object_size) or app.object_size
  if args.fast then app.fast_install = 1 end
  local client = ctx:client()
  local ids = ctx:ids(args)
  return ctx:finish(batch.install(client, app, ids, ctx:batch_opts(args)))
end)

command("restart", "Restart cloud phones (CPH).", function(cmd)
  cmd:argument("ids", "Phone ids (- reads stdin)."):args("*")
  cmd:option("--image-id", "Restart into this image.")
  batch_flags(cmd)
end, function(ctx, args)
  local client = ctx:client()
  local ids = ctx:ids(args)
  local opts = ctx:batch_opts(args)
  opts.image_id = args.image_id
  return ctx:finish(batch.restart(client, ids, opts))
end)

command("resume", "Follow an interrupted batch again from its journal. With --submit-missing, the chunks never " ..
        "sent are sent now: the journal keeps signed URLs scrubbed, so an install needs --app (and the package " ..
        "URL as for install) again, and a command holding a signed URL needs --command-file.", function(cmd)
  cmd:argument("journal_file", "The journal written with --journal.")
  cmd:flag("--submit-missing", "Submit chunks that were never sent (default: report them as errors).")
  cmd:option("--app", "An install's JSON file again (see install).")
  cmd:option("--package-url-file", "A file whose first line is install_package_url (instead of KOOPHONE_PACKAGE_URL).")
  cmd:option("--command-file", "A file holding the batch's command again, when it holds a signed URL.")
end, function(ctx, args)
  local client = ctx:client()
  local opts = ctx:batch_opts(args)
  opts.journal = nil
  opts.submit_missing = args.submit_missing
  if args.app then opts.app = read_app(ctx, args) end
  if args.command_file then
    local text, err = read_file(args.command_file)
    if not text then ctx:die(2, "cannot read --command-file ", args.command_file, ": ", err) end
    opts.command = text:gsub("\r?\n$", "")
    ctx:secret(opts.command)
  end
  return ctx:finish(batch.resume(client, args.journal_file, opts))
end)

-- Follows a task with Task:wait (its adaptive polling); returns its rows.
local function follow(ctx, client, args)
  local task, message = client:task(args.task_id, { kind = args.kind })
  if not task then ctx:die(2, message) end
  local started = koophone.now()
  local function on_progress(_, _, t)
    if not ctx.show then return end
    local c = t:counts()
    local p = { done = c.total - c.running, total = c.total, ok = c.ok, failed = c.failed, error = c.error,
                timeout = c.timeout }
    local el = koophone.now() - started
    p.rate = el > 0 and p.done / el or 0
    ctx.show(p)
  end
  local rows, wmessage, err = task:wait { timeout = ctx:timeout(), on_progress = on_progress }
  if rows then return rows end
  -- a timeout, or a task that cannot be read: report the rows it has
  if type(err.rows) == "table" and #err.rows > 0 then return err.rows end
  ctx.end_progress(false)
  ctx:die(status_of(err), wmessage)
end

command("task", "Query (or follow) a task.", function(cmd)
  cmd:argument("task_id", "The task id (the request id of a restart).")
  cmd:option("--kind", "command, install, restart, reset, backup or phone_reset.")
    :choices { "command", "install", "restart", "reset", "backup", "phone_reset" }
    :default("command")
  cmd:flag("--follow", "Poll until no job is running (or --timeout).")
end, function(ctx, args)
  local client = ctx:client()
  local okid, verr = validate.path_id("task_id", args.task_id)
  if not okid then ctx:die(2, tostring(verr)) end
  local rows
  if args.follow then
    rows = follow(ctx, client, args)
  else
    local message, err
    -- rows keyed by job id (by phone id for a restart's request id)
    if require("koophone.task").CPH_KINDS[args.kind] then rows, message, err = client:jobs { request_id = args.task_id }
    else rows, message, err = client:query_task(args.task_id) end
    if not rows then ctx:die(status_of(err), message) end
  end
  return ctx:finish(report_mod.new { rows = rows, requests = client.transport.stats.requests })
end)

command("job", "Show one CPH job (ShowJob).", function(cmd)
  cmd:argument("job_id", "The job id.")
end, function(ctx, args)
  local client = ctx:client()
  local row, message, err = client:job(args.job_id)
  if not row then ctx:die(status_of(err), message) end
  return ctx:finish(report_mod.new { rows = { row }, requests = client.transport.stats.requests })
end)

-- the fleet (koophone.fleet) ----------------------------------------------------------------

-- Writes records (plain tables) as they come from `iter` — a list never
-- sits in memory whole: a JSON array, CSV, or a text table with fixed
-- column widths (long cells cut). `iter` yields records, or `false,
-- message, err` when a page failed. Returns the number written, or dies.
local function stream_records(ctx, iter, columns)
  local n = 0
  local plain = report_mod.plain
  local function cell(v, w) -- padded to its column
    local text = report_mod.cell(v, w)
    return text .. string.rep(" ", w - #text)
  end
  if ctx.format == "json" then ctx:out("[")
  elseif ctx.format == "csv" then ctx:out(table.concat(columns, ",") .. "\r\n")
  else
    local head, sep = {}, {}
    for i, c in ipairs(columns) do
      head[i], sep[i] = cell(c[1], c[2]), string.rep("-", c[2])
    end
    ctx:out((table.concat(head, "  "):gsub("%s+$", "")) .. "\n" .. table.concat(sep, "  ") .. "\n")
  end
  for r, message, err in iter do
    if not r then
      if ctx.format == "json" then ctx:out("]\n") end
      ctx:die(status_of(err), message)
    end
    n = n + 1
    if ctx.format == "json" then
      ctx:out((n > 1 and ",\n" or "\n") .. cjson.encode(plain(r)):gsub("\\/", "/"))
    elseif ctx.format == "csv" then
      local f = {}
      for i, c in ipairs(columns) do f[i] = report_mod.csv_field(r[c]) end
      ctx:out(table.concat(f, ",") .. "\r\n")
    else
      local f = {}
      for i, c in ipairs(columns) do f[i] = cell(r[c[1]], c[2]) end
      ctx:out((table.concat(f, "  "):gsub("%s+$", "")) .. "\n")
    end
  end
  if ctx.format == "json" then ctx:out(n > 0 and "\n]\n" or "]\n") end
  return n
end

-- `columns` for stream_records: names for CSV, {name, width} for a table
local function columns_for(ctx, list)
  if ctx.format ~= "table" then
    local names = {}
    for i, c in ipairs(list) do names[i] = c[1] end
    return names
  end
  return list
end

-- A list from a table of records (apps), as a one-shot iterator.
local function each_of(list)
  local i = 0
  return function()
    i = i + 1
    return list[i]
  end
end

command("instances", "List the instances (every page, one at a time: any fleet size), with their state.",
        function(cmd)
  cmd:option("--status", "Only instances in this state: running, starting, stopped, going_offline, shut_down, unknown.")
  cmd:option("--name", "Only instances whose name contains this text.")
  cmd:option("--page-size", "Instances per request (1..200, default 100).")
end, function(ctx, args)
  local client = ctx:client()
  local iter, message, err = client:each_instance { status = args.status, instance_name = args.name,
    page_size = ctx:number("page-size", args.page_size), timeout = ctx:timeout() }
  if not iter then ctx:die(status_of(err), message) end
  local running = 0
  local counted = function()
    local r, m, e = iter()
    if r and r.state == "running" then running = running + 1 end
    return r, m, e
  end
  local n = stream_records(ctx, counted, columns_for(ctx, {
    { "instance_id", 12 }, { "state", 13 }, { "vendor_status", 13 }, { "phone_id", 32 },
    { "instance_name", 20 }, { "backup_status", 13 } }))
  ctx:say(("%d instances, %d running"):format(n, running))
  return 0
end)

command("status", "The state of instances (running, starting, stopped, ...), one row per id.", function(cmd)
  cmd:argument("ids", "Instance ids (- reads stdin)."):args("*")
  batch_flags(cmd)
end, function(ctx, args)
  local client = ctx:client()
  local ids = ctx:ids(args)
  return ctx:finish(batch.status(client, ids, ctx:batch_opts(args)))
end)

command("apps", "The apps installed on an instance (every page).", function(cmd)
  cmd:argument("id", "The instance id.")
  cmd:option("--type", "system or third_party (default both)."):choices { "system", "third_party" }
end, function(ctx, args)
  local client = ctx:client()
  local apps, message, err = client:apps(args.id, { app_type = args.type, timeout = ctx:timeout() })
  if not apps then ctx:die(status_of(err), message) end
  local n = stream_records(ctx, each_of(apps), columns_for(ctx, {
    { "app_pkg", 40 }, { "app_version", 16 }, { "app_name", 24 } }))
  ctx:say(("%s: %d apps"):format(args.id, n))
  return 0
end)

for _, op in ipairs {
  { "reboot", "Reboot instances (a row ok: the vendor took the order; see `koophone status`)." },
  { "reset", "Reset instances to their image (installed apps are removed); follows the tasks." },
  { "backup", "Back instances up; follows the tasks." },
} do
  command(op[1], op[2], function(cmd)
    cmd:argument("ids", "Instance ids (- reads stdin)."):args("*")
    batch_flags(cmd)
  end, function(ctx, args)
    local client = ctx:client()
    local ids = ctx:ids(args)
    return ctx:finish(batch[op[1]](client, ids, ctx:batch_opts(args)))
  end)
end

-- main ------------------------------------------------------------------------------------

local function stderr_is_tty()
  local ok = os.execute("test -t 2")
  return ok == true or ok == 0
end

local function run(ctx)
  local flag, why = secret_flag(ctx.argv)
  if flag then ctx:die(2, flag, " is not accepted: ", why) end
  local parser = build_parser(ctx)
  local ok, args = parser:pparse(ctx.argv)
  if not ok then
    ctx.stderr:write(parser:get_usage(), "\n\nkoophone: error: ", ctx:scrub(args), "\n")
    return 2
  end
  ctx.args = args
  ctx.cfg = args.config and ctx:load_config(args.config) or {}
  ctx.format = args.format or ctx:getenv("KOOPHONE_FORMAT") or ctx.cfg.format or "table"
  if ctx.format ~= "table" and ctx.format ~= "json" and ctx.format ~= "csv" then
    ctx:die(2, "--format must be table, json or csv")
  end
  ctx:progress(args.quiet)
  return M.commands[args.command].run(ctx, args)
end

--- Runs the command line.
-- @tparam {string,...} argv the arguments (as `arg`: `argv[1]` is the first)
-- @tparam[opt] function|table env `getenv(name)` or a table of variables
--   (default `os.getenv`)
-- @tparam[opt] table streams `stdout`, `stderr`, `stdin` (default the
--   process's) and `tty` (draw a progress bar; default: whether stderr is
--   a terminal, when it is the process's)
-- @treturn integer the exit status: 0 all ok, 1 some ids not ok, 2 usage
--   or configuration error, or the first request refused
function M.main(argv, env, streams)
  streams = streams or {}
  if type(env) == "table" then
    local t = env
    env = function(name) return t[name] end
  end
  local ctx = setmetatable({
    argv = argv or {}, env = env or os.getenv, secrets = {},
    stdout = streams.stdout or io.stdout, stderr = streams.stderr or io.stderr, stdin = streams.stdin or io.stdin,
  }, Ctx)
  if streams.tty ~= nil then ctx.tty = streams.tty
  else ctx.tty = ctx.stderr == io.stderr and stderr_is_tty() end
  local trace
  local ok, res = xpcall(function() return run(ctx) end, function(e)
    if exit_code(e) == nil then trace = debug.traceback("", 2) end
    return e
  end)
  if ok then return res end
  local code = exit_code(res)
  if code then return code end
  -- a bug of koophone: say so plainly (scrubbed), with where it happened
  ctx:say("koophone: internal error: ", res, trace or "")
  return 1
end

return M
