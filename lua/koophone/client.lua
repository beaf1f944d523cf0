--- The client: one method per vendor endpoint.
--
-- Every method checks its input against the documented limits first (and
-- sends nothing on bad input), then makes the call through the client's
-- engine. Expected failures come back as `nil, err` (see `koophone.errors`);
-- a per-instance failure inside a 200 reply is a result row, not an error.
-- @module koophone.client
local core = require "koophone.core"
local errors = require "koophone.errors"
local validate = require "koophone.validate"
local transport = require "koophone.transport"
local rows = require "koophone.rows"
local Task = require "koophone.task"
local auth = require "koophone.auth"
local ratelimit = require "koophone.ratelimit"
local loop = require "koophone.loop"

local M = {}
M.VERSION = "0.1.0"

local Client = {}
Client.__index = Client
M.Client = Client

local limits = validate.limits
local fail = errors.fail
local item_rows = core.item_rows

-- Tail of a public call whose helper returns `value` or `nil, err`.
local function ret(value, err)
  if value == nil then return fail(err) end
  return value
end
local DEFAULT_ENDPOINT = "https://koophone.myhuaweicloud.com"

-- Regions (docs/credentials.md): KooPhone's, from the vendor's Java SDK
-- (services/koophone: cn-north-4 and cn-south-1, one endpoint); CPH's, from
-- the Go SDK's services/cph/v1/region/region.go.
local KOOPHONE_REGIONS = { ["cn-north-4"] = true, ["cn-south-1"] = true }
local CPH_REGIONS = { "af-north-1", "ap-southeast-1", "ap-southeast-3", "cn-east-2", "cn-east-3", "cn-east-4",
                      "cn-north-4", "cn-north-9", "cn-south-1", "cn-southwest-2", "la-north-2", "la-south-2",
                      "ru-northwest-2" }
M.regions = { koophone = KOOPHONE_REGIONS, cph = CPH_REGIONS }
local KNOWN_REGION = {}
for _, r in ipairs(CPH_REGIONS) do KNOWN_REGION[r] = true end

local function getenv(name)
  local v = os.getenv(name)
  if v == "" then return nil end
  return v
end

local function is_loopback(host)
  return host == "localhost" or host:match("^127%.%d+%.%d+%.%d+$") ~= nil
    or host == "[::1]" or host == "::1"
end

-- Checks an endpoint URL; returns it without a trailing slash.
local function check_endpoint(field, url, allow_insecure)
  if type(url) ~= "string" then return nil, errors.validation(field, "must be a URL string") end
  local scheme, host = url:match("^(https?)://([^/:]+)")
  if not scheme then
    if url:match("^https?://%[") then scheme, host = url:match("^(https?)://(%[[^%]]+%])") end
    if not scheme then return nil, errors.validation(field, "must start with https:// (got " .. url:sub(1, 40) .. ")") end
  end
  if url:find("[%s?#]") then return nil, errors.validation(field, "must not contain spaces, '?' or '#'") end
  if scheme == "http" and not allow_insecure and not is_loopback(host) then
    return nil, errors.validation(field, "uses plain http:// to a host that is not loopback (" .. host ..
      "); use https:// or set allow_insecure = true")
  end
  return (url:gsub("/+$", ""))
end

-- Every option koophone.new knows (anything else is a typo).
local CLIENT_OPTIONS = validate.set {
  "token", "iam", "endpoint", "cph_endpoint", "project_id", "timeout", "connect_timeout",
  "low_speed_limit", "low_speed_time", "retries", "retry_base", "retry_cap", "ca_file", "ca_path",
  "insecure", "proxy", "no_proxy", "http_version", "client_cert", "client_key", "allow_insecure",
  "strict_command", "max_restart", "poll_interval", "poll_max_interval", "poll_ratio",
  "task_timeout", "engine", "max_connections",
  "ak", "sk", "security_token", "region", "iam_endpoint",
  "max_ids",
}
M.OPTIONS = CLIENT_OPTIONS
CLIENT_OPTIONS.adaptive_rate = true

--- Creates a client.
--
-- Options (each falls back to the environment where one is named):
--
-- * `token` (`KOOPHONE_TOKEN`): a ready IAM token; or `iam` = `{user=,
--   password=, domain=, project_id= | project=, endpoint=}` to obtain and
--   renew one; or `ak`, `sk` (`HUAWEICLOUD_SDK_AK`, `HUAWEICLOUD_SDK_SK`)
--   and for temporary credentials `security_token`
--   (`HUAWEICLOUD_SDK_SECURITY_TOKEN`) to sign every request (see
--   `koophone.auth` and docs/credentials.md)
-- * `region` (`KOOPHONE_REGION`, e.g. "cn-north-4"): gives the CPH endpoint
--   `https://cph.{region}.myhuaweicloud.com` and, with AK/SK and no project
--   id, the project id (looked up at `iam_endpoint`, default
--   `https://iam.{region}.myhuaweicloud.com`); an unknown region is refused
-- * `endpoint` (`KOOPHONE_ENDPOINT`, default the vendor's KooPhone URL)
-- * `cph_endpoint` (`KOOPHONE_CPH_ENDPOINT`), `project_id`
--   (`KOOPHONE_PROJECT_ID`, with AK/SK also `HUAWEICLOUD_SDK_PROJECT_ID`):
--   needed for `restart_phones`, `job`, `jobs`; explicit endpoints win
--   over the region's
-- * `timeout` (seconds per attempt, default 60), `connect_timeout` (10),
--   `low_speed_limit` (bytes/s) with `low_speed_time` (s): give up on a
--   transfer that crawls,
--   `retries` (3), `retry_base` (0.1 s), `retry_cap` (10 s)
-- * `ca_file` (`KOOPHONE_CA_FILE`), `ca_path`, `insecure` (skip TLS
--   verification; off), `proxy`, `no_proxy`, `http_version` ("1.1", "2")
-- * `allow_insecure`: allow plain `http://` to a non-loopback host
-- * `strict_command`: enforce the documented command charset
-- * `max_restart` (100): phones per batch-restart (and CPH batch-reset) request
-- * `max_ids` (100): instances per reboot, batch-reset, backup and
--   batch-query-status request (the vendor documents no bound: `docs/vendor.md`)
-- * `poll_interval` (0.5 s), `poll_max_interval` (10 s), `poll_ratio` (0.1),
--   `task_timeout` (600 s): see `koophone.task` for the polling schedule
-- * `engine`: share an engine (from `koophone.engine()`) between clients
-- * `adaptive_rate`: pace every call by an adaptive limiter that learns the
--   gateway's throttling from its 429s (`koophone.ratelimit`); off by
--   default, as batches attach one for their duration anyway
-- @tparam[opt] table opts
-- @treturn Client|nil
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure: a validation error naming the option
function M.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("koophone.new: options must be a table", 2) end
  local self = setmetatable({}, Client)
  local known, err = validate.known_keys("option", opts, CLIENT_OPTIONS)
  if not known then return fail(err) end
  if opts.adaptive_rate ~= nil and type(opts.adaptive_rate) ~= "boolean" then
    return fail(errors.validation("adaptive_rate", "must be true or false, got " .. type(opts.adaptive_rate)))
  end
  local insecure_ok = opts.allow_insecure
  local region = opts.region or getenv("KOOPHONE_REGION")
  if region ~= nil and not KNOWN_REGION[region] then
    return fail(errors.validation("region", "is not a known region (got " .. tostring(region):sub(1, 40)
      .. "); known: " .. table.concat(CPH_REGIONS, ", ")))
  end
  self.region = region
  -- explicit endpoints win over the region's
  self.endpoint, err = check_endpoint("endpoint", opts.endpoint or getenv("KOOPHONE_ENDPOINT") or DEFAULT_ENDPOINT,
                                      insecure_ok)
  if not self.endpoint then return fail(err) end
  local cph = opts.cph_endpoint or getenv("KOOPHONE_CPH_ENDPOINT")
    or (region and "https://cph." .. region .. ".myhuaweicloud.com")
  if cph then
    self.cph_endpoint, err = check_endpoint("cph_endpoint", cph, insecure_ok)
    if not self.cph_endpoint then return fail(err) end
  end
  local iam_endpoint = opts.iam_endpoint or (region and "https://iam." .. region .. ".myhuaweicloud.com")
  if iam_endpoint then
    self.iam_endpoint, err = check_endpoint("iam_endpoint", iam_endpoint, insecure_ok)
    if not self.iam_endpoint then return fail(err) end
  end
  self.project_id = opts.project_id or getenv("KOOPHONE_PROJECT_ID")
  if self.project_id ~= nil then
    local ok, perr = validate.path_id("project_id", self.project_id)
    if not ok then return fail(perr) end
  end
  for _, k in ipairs { "timeout", "connect_timeout", "retry_base", "retry_cap", "poll_interval",
                       "poll_max_interval", "task_timeout", "poll_ratio" } do
    local ok, verr = validate.seconds(k, opts[k], k ~= "retry_base")
    if not ok then return fail(verr) end
  end
  for _, k in ipairs { "low_speed_limit", "low_speed_time" } do
    if opts[k] ~= nil then
      local ok, verr = validate.integer(k, opts[k], 1)
      if not ok then return fail(verr) end
    end
  end
  for _, k in ipairs { "ca_file", "ca_path", "proxy", "no_proxy", "client_cert", "client_key" } do
    if opts[k] ~= nil then
      local ok, verr = validate.text(k, opts[k], 4096, false)
      if not ok then return fail(verr) end
    end
  end
  if opts.http_version ~= nil and opts.http_version ~= "1.1" and opts.http_version ~= "2"
      and opts.http_version ~= "2-prior-knowledge" then
    return fail(errors.validation("http_version", "must be \"1.1\", \"2\" or \"2-prior-knowledge\", got "
                                  .. tostring(opts.http_version)))
  end
  for _, k in ipairs { "insecure", "allow_insecure", "strict_command" } do
    if opts[k] ~= nil and type(opts[k]) ~= "boolean" then
      return fail(errors.validation(k, "must be true or false, got " .. type(opts[k]) .. " " .. tostring(opts[k])))
    end
  end
  if opts.max_connections ~= nil then
    local ok, verr = validate.integer("max_connections", opts.max_connections, 0, 100000)
    if not ok then return fail(verr) end
  end
  if opts.retries ~= nil then
    local ok, verr = validate.integer("retries", opts.retries, 0, 20)
    if not ok then return fail(verr) end
  end
  self.max_restart = opts.max_restart or 100
  do
    local ok, verr = validate.integer("max_restart", self.max_restart, 1, 1000)
    if not ok then return fail(verr) end
  end
  self.max_ids = opts.max_ids or 100
  do
    local ok, verr = validate.integer("max_ids", self.max_ids, 1, 1000)
    if not ok then return fail(verr) end
  end
  self.auth, err = auth.from_options(opts, self)
  if not self.auth then return fail(err) end
  if self.auth.kind == "aksk" and self.project_id == nil and self.auth.project_id ~= nil then
    self.project_id = self.auth.project_id -- HUAWEICLOUD_SDK_PROJECT_ID
    local ok, perr = validate.path_id("project_id", self.project_id)
    if not ok then return fail(perr) end
  end
  self.strict_command = opts.strict_command and true or false
  self.poll_interval = opts.poll_interval or 0.5
  self.poll_max_interval = opts.poll_max_interval or 10
  self.poll_ratio = opts.poll_ratio or 0.1
  self.task_timeout = opts.task_timeout or 600
  self.shared_engine = opts.engine ~= nil
  self.engine = opts.engine or core.engine { max_host_connections = opts.max_connections }
  self.transport = transport.new {
    engine = self.engine, auth = self.auth, version = M.VERSION,
    timeout = opts.timeout, connect_timeout = opts.connect_timeout, retries = opts.retries,
    retry_base = opts.retry_base, retry_cap = opts.retry_cap,
    ca_file = opts.ca_file or getenv("KOOPHONE_CA_FILE"), ca_path = opts.ca_path,
    insecure = opts.insecure, proxy = opts.proxy, no_proxy = opts.no_proxy,
    http_version = opts.http_version, client_cert = opts.client_cert, client_key = opts.client_key,
    low_speed_limit = opts.low_speed_limit, low_speed_time = opts.low_speed_time,
  }
  self.auth:attach(self.transport)
  if opts.adaptive_rate then
    -- one limiter for every call of this client (koophone.ratelimit)
    self.transport.limiter = ratelimit.new()
    self.transport.limiter_kept = true
  end
  return self
end

function Client:__tostring()
  return ("koophone.client (%s)"):format(self.endpoint)
end

-- A call to the KooPhone API: checks the envelope, returns `data`. The
-- error code may be spelt `errorCode` (docs/vendor.md), or, on
-- ListInstances (SDK `InstanceBatchQueryRspData`), sit inside `data`.
-- `shape` "none": the reply has no data (reboot). `rows_for` (sync-command's
-- ids): the reply's results may come back as rows already, `res.rows`;
-- likewise the ended jobs of a task query for `job_rows` (Client:_task_jobs).
function Client:_koophone(method, path, body, opts, shape, rows_for, job_rows)
  local res, err = self.transport:request {
    method = method, url = self.endpoint .. path, json = body,
    request_id = opts and opts.request_id, timeout = opts and opts.timeout,
    deadline = opts and opts.timeout and core.now() + opts.timeout, rows = rows_for,
    job_rows = job_rows,
  }
  if not res then return nil, err end
  local b = res.body
  local code, msg = b.error_code, b.error_msg
  if code == nil then code, msg = b.errorCode, b.errorMsg end
  if rows.success_code(code) and type(b.data) == "table" and not rows.success_code(b.data.error_code) then
    code, msg = b.data.error_code, b.data.error_msg
  end
  if not rows.success_code(code) then
    return nil, errors.new { kind = "vendor", http_status = res.status, code = errors.text(code),
                             message = rows.text(msg), request_id = res.request_id,
                             attempts = res.attempts }
  end
  if shape ~= "none" and type(b.data) ~= "table" then
    -- valid JSON but the wrong shape: a query is read again (a read is
    -- harmless), a command may have run
    return nil, errors.new { kind = "decode", http_status = res.status, request_id = res.request_id,
                             message = "reply has no 'data' object", attempts = res.attempts,
                             retryable = method == "GET", maybe_executed = method ~= "GET" }
  end
  return b.data or {}, res
end

-- A call to the CPH API (no envelope).
function Client:_cph(method, path, body, opts, job_rows)
  if not self.cph_endpoint then
    return nil, errors.validation("cph_endpoint", "is not configured (option cph_endpoint or KOOPHONE_CPH_ENDPOINT)")
  end
  if not self.project_id and self.auth.project then -- AK/SK: looked up by region
    local pid, perr = self.auth:project()
    if pid == nil then return nil, perr end
    self.project_id = pid or nil
  end
  if not self.project_id then
    return nil, errors.validation("project_id", "is not configured (option project_id or KOOPHONE_PROJECT_ID)")
  end
  local res, err = self.transport:request {
    method = method, url = self.cph_endpoint .. "/v1/" .. self.project_id .. path, json = body,
    request_id = opts and opts.request_id, timeout = opts and opts.timeout,
    deadline = opts and opts.timeout and core.now() + opts.timeout, job_rows = job_rows,
  }
  if not res then return nil, err end
  return res.body, res
end

local CALL_OPTIONS = validate.set { "request_id", "timeout", "strict", "image_id" }

local function check_call_opts(opts)
  if opts == nil then return true end
  if type(opts) ~= "table" then return nil, errors.validation("opts", "must be a table") end
  local ok, err = validate.known_keys("option", opts, CALL_OPTIONS)
  if not ok then return nil, err end
  ok, err = validate.seconds("timeout", opts.timeout, true)
  if not ok then return nil, err end
  if opts.request_id ~= nil then
    ok, err = validate.text("request_id", opts.request_id, 128, false)
    if not ok then return nil, err end
  end
  return true
end

-- A reply that is valid JSON but not the expected shape. After a command
-- it may have run; after a query (`read`) it is worth reading again.
local function decode_fail(res, what, read)
  return errors.new { kind = "decode", http_status = res.status, request_id = res.request_id,
                      attempts = res.attempts, message = what, maybe_executed = not read,
                      retryable = read and true or false }
end

-- validate.command, but a command that passed with the same strictness is
-- not scanned again: a sweep sends one command with every chunk of ids.
-- (Only a passing command is remembered, so a refusal is always fresh.)
function Client:_check_command(command, opts)
  local strict = self.strict_command or (opts and opts.strict) or false
  if command == self.checked_command and strict == self.checked_strict then return true end
  local ok, err = validate.command(command, strict)
  if ok then self.checked_command, self.checked_strict = command, strict end
  return ok, err
end

--- Runs a command on up to 32 instances and waits for its output
-- (`POST /v1/instances/sync-command`).
-- @tparam string command e.g. `"getprop ro.build.version.release"`
-- @tparam {string,...} ids instance ids (1..32, each at most 32 characters)
-- @tparam[opt] table opts `request_id`, `timeout` (seconds)
-- @treturn {table,...}|nil one row per id, in the order given; the list
--   also has `request_id` and `attempts`
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function Client:sync_command(command, ids, opts)
  local ok, err = self:_check_command(command, opts)
  if ok then ok, err = validate.ids("instance_ids", ids, limits.sync_ids) end
  if ok then ok, err = check_call_opts(opts) end
  if not ok then return fail(err) end
  local data, res = self:_koophone("POST", "/v1/instances/sync-command",
                                   { command = command, instance_ids = ids }, opts, nil, ids)
  if not data then return fail(res) end
  -- the usual reply (one plain item per id, in order): its rows were built
  -- from the reply's bytes (src/cmd_rows.c), the rows rows.from_item builds
  -- but for what only the finished call knows
  if res.rows then return rows.finish(res.rows, res) end
  local results = data.cmd_results
  if type(results) ~= "table" then return fail(decode_fail(res, "reply has no 'cmd_results' list")) end
  -- else, when its items are plain all the same (e.g. decoded by cjson),
  -- in C too (nil when any item is not plain)
  local out = item_rows(ids, results, "instance_id", res.request_id, res.attempts, res.elapsed)
  if not out then out = rows.from_results(ids, results, res) end
  out.request_id, out.attempts = res.request_id, res.attempts
  return out
end

-- Builds a task from a reply's task_id and cmd_jobs.
function Client:_task_from_jobs(kind, ids, data, res)
  if type(data.cmd_jobs) ~= "table" or data.task_id == nil or data.task_id == core.null then
    return nil, decode_fail(res, "reply has no 'task_id' and 'cmd_jobs'")
  end
  local jobs = {}
  for _, j in ipairs(data.cmd_jobs) do
    if type(j) == "table" and rows.text(j.job_id) and rows.text(j.instance_id) then
      jobs[rows.text(j.job_id)] = rows.text(j.instance_id)
    end
  end
  return Task.new(self, {
    kind = kind, id = tostring(data.task_id), ids = ids, jobs = jobs, id_field = "instance_id",
    request_id = res.request_id, attempts = res.attempts,
  })
end

--- Starts a command on up to 100 instances (`POST /v1/instances/async-command`).
-- @tparam string command
-- @tparam {string,...} ids instance ids (1..100)
-- @tparam[opt] table opts `request_id`, `timeout`
-- @treturn koophone.task.Task|nil a task (see `koophone.task`)
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function Client:async_command(command, ids, opts)
  local ok, err = self:_check_command(command, opts)
  if ok then ok, err = validate.ids("instance_ids", ids, limits.async_ids) end
  if ok then ok, err = check_call_opts(opts) end
  if not ok then return fail(err) end
  local data, res = self:_koophone("POST", "/v1/instances/async-command",
                                   { command = command, instance_ids = ids }, opts)
  if not data then return fail(res) end
  return ret(self:_task_from_jobs("command", ids, data, res))
end

-- Checks an install description and the instances; returns the body.
local function install_body(app, ids)
  local body, err = validate.app(app)
  if not body then return nil, err end
  local ok
  ok, err = validate.ids("instance_id_list", ids, limits.install_ids)
  if not ok then return nil, err end
  body.instance_id_list = ids
  return body
end

--- Installs an app on up to 100 instances (`POST /v1/instances/app/install`).
-- Both reply shapes are accepted: `data.data.{task_id, cmd_jobs}` (the seed
-- page, task ids `ZGCA…`) and the flat `data.{task_id, cmd_jobs}` (the
-- vendor's SDK since 3.1.207, task ids `ZGCA…` or `FULFILL…`). Install jobs
-- may start at status 0 (not run yet) and fail with 3: see `koophone.rows`.
-- @tparam table app `object_name`, `file_name`, `object_version`,
--   `object_size` (MB), `install_package_url` (treated as a secret: its
--   query string never appears in errors or logs), `fast_install` (0/1),
--   `biz_type` ("apk"), `content_type` ("application/octet-stream"), `content_md5`
-- @tparam {string,...} ids instance ids (1..100)
-- @tparam[opt] table opts `request_id`, `timeout`
-- @treturn koophone.task.Task|nil
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function Client:install_app(app, ids, opts)
  local body, err = install_body(app, ids)
  if body then
    local ok
    ok, err = check_call_opts(opts)
    if not ok then body = nil end
  end
  if not body then return fail(err) end
  local data, res = self:_koophone("POST", "/v1/instances/app/install", body, opts)
  if not data then return fail(res) end
  -- the seed page nests the task one level deeper (data.data.task_id); the
  -- vendor's SDK since 3.1.207 has it flat (data.task_id): take either
  local inner = data
  if data.task_id == nil and type(data.data) == "table" then inner = data.data end
  if inner.task_id == nil then
    return fail(decode_fail(res, "reply has no 'data.task_id' (SDK) nor 'data.data.task_id' (seed page)"))
  end
  return ret(self:_task_from_jobs("install", ids, inner, res))
end

local function restart_body(phones, image_id, max)
  if type(phones) ~= "table" then return nil, errors.validation("phones", "must be a list") end
  local ids, list = {}, {}
  for i, p in ipairs(phones) do
    local entry, err = validate.phone(p, ("phones[%d]"):format(i))
    if not entry then return nil, err end
    ids[i] = entry.phone_id
    list[i] = entry
  end
  local ok, err = validate.ids("phones", ids, max, limits.phone_id_chars)
  if not ok then
    if err.field then err.field = err.field:gsub("^phones%[(%d+)%]$", "phones[%1].phone_id") end
    err.message = err.message:gsub("^phones%[(%d+)%]", "phones[%1].phone_id")
    return nil, err
  end
  if #phones ~= #list or next(phones) == nil then return nil, errors.validation("phones", "must not be empty", max) end
  local body = { phones = list }
  if image_id ~= nil then
    ok, err = validate.path_id("image_id", image_id)
    if not ok then return nil, err end
    body.image_id = image_id
  end
  return body, ids
end

--- Restarts (or starts) cloud phones
-- (`POST /v1/{project_id}/cloud-phone/phones/batch-restart`, CPH).
-- @tparam table phones phone ids, or `{phone_id=, property={...}}` tables
--   (a property table is sent JSON-encoded, as the API wants a string)
-- @tparam[opt] table opts `image_id`, `request_id`, `timeout`
-- @treturn koophone.task.Task|nil a task followed with ListJobs
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function Client:restart_phones(phones, opts)
  return self:_cph_batch("restart", "/cloud-phone/phones/batch-restart", phones, opts)
end

-- A CPH batch operation on phones (batch-restart, batch-reset: the same
-- body and reply) -> a task followed with ListJobs by request id.
function Client:_cph_batch(kind, path, phones, opts)
  local ok, err = check_call_opts(opts)
  if not ok then return fail(err) end
  local body, ids = restart_body(phones, opts and opts.image_id, self.max_restart)
  if not body then return fail(ids) end
  local reply, res = self:_cph("POST", path, body, opts)
  if not reply then return fail(res) end
  if type(reply.jobs) ~= "table" then return fail(decode_fail(res, "reply has no 'jobs' list")) end
  local jobs, initial = {}, {}
  local request_id = rows.text(reply.request_id)
  for _, j in ipairs(reply.jobs) do
    if type(j) == "table" and rows.text(j.phone_id) then
      local pid = rows.text(j.phone_id)
      if rows.text(j.job_id) then
        jobs[rows.text(j.job_id)] = pid
      elseif rows.text(j.error_code) or rows.text(j.error_msg) then
        initial[pid] = { id = pid, phone_id = pid, status = "failed", code = rows.text(j.error_code),
                         message = rows.text(j.error_msg), request_id = request_id }
      end
    end
  end
  return Task.new(self, { kind = kind, id = request_id, ids = ids, jobs = jobs, rows = initial,
                          id_field = "phone_id", request_id = request_id, attempts = res.attempts })
end

--- Reads an async task's jobs once (`GET /v1/instances/tasks/{task_id}`).
-- @tparam string task_id
-- @tparam[opt] table opts `request_id`, `timeout`
-- @treturn {table,...}|nil the jobs: rows keyed by job (`id` is the job id)
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function Client:query_task(task_id, opts)
  local jobs, _, err = self:_task_jobs(task_id, opts)
  if not jobs then return fail(err) end
  local out, extra = {}, { task_id = task_id }
  for i, j in ipairs(jobs) do out[i] = rows.from_item(rows.text(j.job_id), "job_id", j, extra) end
  return out
end

-- The vendor's job items of a task (each a table with a job id), as they
-- came: a task builds each row once, when the job ends. With `follow` (the
-- task's tables, see src/job_rows.c) a plain reply comes back as
-- `{ rows = the ended jobs' rows, changes = ..., count = its items }`
-- instead, its items never made (Task:_apply_rows).
function Client:_task_jobs(task_id, opts, follow)
  local ok, err = validate.path_id("task_id", task_id)
  if ok then ok, err = check_call_opts(opts) end
  if not ok then return fail(err) end
  local data, res = self:_koophone("GET", "/v1/instances/tasks/" .. task_id, nil, opts, nil, nil, follow)
  if not data then return fail(res) end
  if type(data.jobs) ~= "table" then return fail(decode_fail(res, "reply has no 'jobs' list", true)) end
  if res.rows then return { rows = res.rows, changes = res.job_changes, count = res.job_count } end
  local out = {}
  for _, j in ipairs(data.jobs) do
    if type(j) == "table" and rows.text(j.job_id) then out[#out + 1] = j end
  end
  return out
end

local TASK_OPTIONS = validate.set { "jobs", "ids", "kind" }

--- A task object for an existing task id, e.g. after a restart of the
-- program (see `koophone.task`).
-- @tparam string task_id
-- @tparam[opt] table opts `jobs` (job_id -> instance id; without it rows
--   are keyed by job id), `ids` (the instances, in order), `kind`
--   ("command", "install", "reset", "backup", or "restart" / "phone_reset":
--   then task_id is the CPH request id)
-- @treturn koophone.task.Task|nil
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function Client:task(task_id, opts)
  opts = opts or {}
  local ok, err = validate.path_id("task_id", task_id)
  if ok and type(opts) ~= "table" then ok, err = nil, errors.validation("opts", "must be a table") end
  if ok then ok, err = validate.known_keys("option", opts, TASK_OPTIONS) end
  if not ok then return fail(err) end
  local kind = opts.kind or "command"
  return Task.new(self, { kind = kind, id = task_id, ids = opts.ids, jobs = opts.jobs,
                          id_field = Task.CPH_KINDS[kind] and "phone_id" or "instance_id" })
end

local function cph_job_row(j)
  local pid = rows.text(j.phone_id) or rows.text(j.job_id) or "?"
  local row = rows.from_item(pid, "phone_id", j)
  row.server_id = rows.text(j.server_id)
  row.begin_time = rows.text(j.begin_time)
  row.end_time = rows.text(j.end_time)
  row.request_id = rows.text(j.request_id)
  return row
end

--- One CPH job (`GET /v1/{project_id}/cloud-phone/jobs/{job_id}`, ShowJob).
-- @tparam string job_id
-- @tparam[opt] table opts `request_id`, `timeout`
-- @treturn table|nil a row (`id` is the phone id)
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function Client:job(job_id, opts)
  local ok, err = validate.path_id("job_id", job_id)
  if ok then ok, err = check_call_opts(opts) end
  if not ok then return fail(err) end
  local body, res = self:_cph("GET", "/cloud-phone/jobs/" .. job_id, nil, opts)
  if not body then return fail(res) end
  return cph_job_row(body)
end

local JOBS_QUERY = validate.set { "request_id", "request_ids", "offset", "limit", "request_id_header", "timeout" }

--- The CPH jobs of one or more requests
-- (`GET /v1/{project_id}/cloud-phone/jobs`, ListJobs), every page.
-- @tparam table q `request_id` or `request_ids` (up to 20), `offset` (0),
--   `limit` (page size, 1..100, default 100), `request_id_header`, `timeout`
-- @treturn {table,...}|nil rows, one per job (`id` is the phone id)
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function Client:jobs(q) return self:_list_jobs(q, cph_job_row) end

-- ListJobs, every page, each job given to `map` (a task takes the vendor's
-- items as they are: it builds each row once, when the job ends). With
-- `follow` (a task's tables, see src/job_rows.c) plain pages come back as
-- `{ rows = the ended jobs' rows, changes = ..., count = the items they
-- had, items = the items of the pages after the first that was not plain }`.
function Client:_list_jobs(q, map, follow)
  if type(q) ~= "table" then return fail(errors.validation("query", "must be a table {request_id=...}")) end
  local known, kerr = validate.known_keys("query field", q, JOBS_QUERY)
  if not known then return fail(kerr) end
  local ids = q.request_ids or (q.request_id and { q.request_id })
  if not ids then return fail(errors.validation("request_id", "is required (or request_ids)")) end
  local ok, err = validate.ids("request_ids", ids, limits.list_request_ids, 128)
  if not ok then return fail(err) end
  for i, id in ipairs(ids) do -- they go into a query string, comma-separated
    ok, err = validate.path_id(("request_ids[%d]"):format(i), id)
    if not ok then return fail(err) end
  end
  if q.request_id_header ~= nil then
    ok, err = validate.text("request_id_header", q.request_id_header, 128, false)
    if not ok then return fail(err) end
  end
  local offset, limit = q.offset or 0, q.limit or limits.list_limit
  ok, err = validate.integer("offset", offset, 0)
  if ok then ok, err = validate.integer("limit", limit, 1, limits.list_limit) end
  if ok then ok, err = validate.seconds("timeout", q.timeout, true) end
  if not ok then return fail(err) end
  local key = #ids == 1 and "request_id=" or "request_ids="
  local out, seen, pages = {}, {}, 0
  local fast -- the rows built from plain pages' bytes
  if follow then -- one listing's own `seen` (a task may be queried twice at once)
    follow = { jobs = follow.jobs, job_of = follow.job_of, not_started = follow.not_started,
               id_field = follow.id_field, later = follow.later, root = true, seen = seen }
  end
  while true do
    local path = ("/cloud-phone/jobs?%s%s&offset=%d&limit=%d"):format(key, table.concat(ids, ","), offset, limit)
    local body, res = self:_cph("GET", path, nil, { timeout = q.timeout, request_id = q.request_id_header }, follow)
    if not body then return fail(res) end
    if type(body.jobs) ~= "table" then return fail(decode_fail(res, "reply has no 'jobs' list", true)) end
    local n, fresh = #body.jobs, 0
    if res.rows then
      -- the page's items were read in C (their job ids are in `seen`)
      n, fresh = res.job_count, res.job_fresh
      fast = fast or { rows = {}, items = out, count = 0 }
      fast.count = fast.count + n
      local list = fast.rows
      for i = 1, #res.rows do list[#list + 1] = res.rows[i] end
      if res.job_changes then
        fast.changes = fast.changes or {}
        for id, zero in pairs(res.job_changes) do fast.changes[id] = zero end
      end
    else
      follow = nil -- the pages after one that was not plain are read by this path too
    end
    for i = 1, res.rows and 0 or n do
      local j = body.jobs[i]
      if type(j) == "table" then
        local job_key = rows.text(j.job_id)
        if not job_key then
          out[#out + 1] = map(j) -- malformed, kept, but it proves no progress
        elseif not seen[job_key] then
          seen[job_key] = true
          fresh = fresh + 1
          out[#out + 1] = map(j)
        end
      end
    end
    offset = offset + n
    local total = tonumber(body.count)
    -- a page that brings nothing new ends the listing, whatever `count` says:
    -- a server repeating itself must not keep us paging forever
    pages = pages + 1
    if n < limit or fresh == 0 or (total and offset >= total) then break end
    if pages >= 1000 then
      return fail(decode_fail(res, "ListJobs kept returning full pages (1,000 pages, " .. #out .. " jobs)", true))
    end
  end
  return fast or out
end

--- Advances every transfer of this client's engine without blocking and
-- returns how many are still running. Call it once per frame in a game
-- loop, then `task:poll()` the tasks you follow.
-- @treturn integer
function Client:step()
  if self.closed then return 0 end
  return loop.drive(self.engine) or 0
end

--- Frees the client's engine (cancelling transfers in flight) unless it was
-- shared through `opts.engine`.
function Client:close()
  self.closed = true
  self.transport.closed = true
  if self.engine and not self.shared_engine then self.engine:close() end
end

-- reboot, reset, backup, status, lists, apps, CPH phones: koophone.fleet
require("koophone.fleet").extend(M, { check_call_opts = check_call_opts, decode_fail = decode_fail })

return M
