-- KooPhone API handlers: sync-command, async-command, task query, app install.
-- Handlers return status, body (table or JSON string), headers.
local util = require "koophone_emulator.util"
local fleet = require "koophone_emulator.fleet"
local acct = require "koophone_emulator.accounting"
local state = require "koophone_emulator.state"

local ngx = ngx
local T = ngx.shared.kp_tasks
local find, sub, format, concat, tonumber = string.find, string.sub, string.format, table.concat, tonumber
local encode = util.encode

local M = {}

local function bad(msg) return 400, util.err("KOOPHONE.API.1000", msg) end

local function check_command(cfg, cmd)
  if type(cmd) ~= "string" then return "Parameter command is invalid: it must be a string." end
  if cmd == "" then return "Parameter command is invalid: it must not be empty." end
  if #cmd > 1024 then return "Parameter command is invalid: at most 1024 bytes." end
  if find(cmd, "%c") then return "Parameter command is invalid: control characters are not allowed." end
  if cfg.strict_command_charset and not find(cmd, "^[%w_%./:%-]+$") then
    return "Parameter command is invalid: only letters, digits, _ . / : - are allowed."
  end
end

local function check_ids(ids, field, max)
  local ok, n = util.is_array(ids)
  if not ok or n == 0 then return "Parameter " .. field .. " is invalid: it must be a non-empty array of strings." end
  if n > max then return "Parameter " .. field .. " is invalid: at most " .. max .. " ids per request." end
  for i = 1, n do
    local id = ids[i]
    if type(id) ~= "string" or id == "" then
      return "Parameter " .. field .. " is invalid: ids must be non-empty strings."
    end
    if #id > 32 then return "Parameter " .. field .. " is invalid: each id has at most 32 characters." end
  end
end
M.check_ids = check_ids

function M.sync(cfg)
  local body, err = util.read_json()
  if not body then return bad(err) end
  local e = check_command(cfg, body.command) or check_ids(body.instance_ids, "instance_ids", 32)
  if e then return bad(e) end
  local cmd = body.command
  local results, wait = {}, 0
  for i, id in ipairs(body.instance_ids) do
    local o = fleet.outcome(cfg, id, cmd, "instance")
    if o.executed then acct.exec(id, cmd) end
    if o.duration and o.duration > wait then wait = o.duration end
    local msg = o.execute_msg
    if msg == nil then msg = util.null end
    results[i] = { instance_id = id, status = o.status, error_code = o.error_code,
                   error_msg = o.error_msg, execute_msg = msg }
  end
  if wait > 0 then ngx.sleep(math.min(wait, cfg.max_sleep)) end
  return 200, { error_code = "0", error_msg = "ok", data = { cmd_results = results } }
end

-- Task storage: one string per task:
--   "<all-done time>\n<complete reply body>\n" then one line per job:
--   phases "<until time>\t<job JSON before it>", then the final job JSON;
--   "<finish>\t<running>\t<final>", or with the SDK's install lifecycle
--   "<start>\t<not run yet (0)>\t<finish>\t<running>\t<final>".
-- (JSON escapes tabs and newlines inside strings, so both separate safely.)
local TASK_HEAD = '{"error_code":"0","error_msg":"ok","data":{"jobs":['
local TASK_TAIL = ']}}'

local function job_json(job_id, o)
  local msg = o.execute_msg
  return '{"job_id":' .. encode(job_id) .. ',"status":' .. o.status .. ',"error_code":' .. encode(o.error_code)
    .. ',"error_msg":' .. encode(o.error_msg) .. ',"execute_msg":' .. (msg == nil and "null" or encode(msg)) .. '}'
end

local function phase_json(job_id, status)
  return '{"job_id":' .. encode(job_id) .. ',"status":' .. status .. ',"error_code":"","error_msg":"","execute_msg":null}'
end

-- create the jobs of a task; returns the cmd_jobs list, or nil and the
-- reply to send when the task store is full.
-- opts.sdk: jobs are 0 (not run yet) for their first third, failures are 3;
-- opts.on_job(id, outcome, now, finish) is called for each known instance.
local function create_task(cfg, task_id, ids, cmd, job_id_of, default_duration, opts)
  opts = opts or {}
  ngx.update_time()
  local now = ngx.now()
  local lines, finals, cmd_jobs = {}, {}, {}
  local all_done = now
  for i, id in ipairs(ids) do
    local o = fleet.outcome(cfg, id, cmd, "instance")
    if o.executed then acct.exec(id, cmd) end
    local dur = o.duration
    if o.unknown then dur = 0 elseif dur == nil then dur = default_duration end
    local finish = now + dur
    if finish > all_done then all_done = finish end
    if opts.sdk and o.status ~= 2 then o.status = 3 end
    if opts.on_job and not o.unknown then opts.on_job(id, o, now, finish) end
    local job_id = job_id_of(i)
    local final = job_json(job_id, o)
    finals[i] = final
    local line = format("%.3f", finish) .. "\t" .. phase_json(job_id, 1) .. "\t" .. final
    if opts.sdk and dur > 0 then
      line = format("%.3f", now + dur / 3) .. "\t" .. phase_json(job_id, 0) .. "\t" .. line
    end
    lines[i] = line
    cmd_jobs[i] = { instance_id = id, job_id = job_id }
  end
  local value = format("%.3f", all_done) .. "\n" .. TASK_HEAD .. concat(finals, ",") .. TASK_TAIL
    .. "\n" .. concat(lines, "\n")
  local kept, status, reply = util.keep(T, "task", task_id, value, all_done, cfg.retention)
  if not kept then return nil, status, reply end
  return cmd_jobs
end
M.create_task = create_task

local function duration_of(cfg, name)
  local d = cfg.durations
  return tonumber(d[name]) or tonumber(d.default) or 1
end
M.duration_of = duration_of

function M.async(cfg)
  local body, err = util.read_json()
  if not body then return bad(err) end
  local e = check_command(cfg, body.command) or check_ids(body.instance_ids, "instance_ids", 100)
  if e then return bad(e) end
  local ids = body.instance_ids
  local seed = cfg.seed
  local task_id = util.hex32(seed, "task", util.reserve("task", 1))
  local first = util.reserve("job", #ids)
  local cmd_jobs, status, reply = create_task(cfg, task_id, ids, body.command,
    function(i) return util.hex32(seed, "job", first + i - 1) end, duration_of(cfg, "async-command"))
  if not cmd_jobs then return status, reply end
  return 200, { error_code = "0", error_msg = "ok", data = { task_id = task_id, cmd_jobs = cmd_jobs } }
end

local NOT_FOUND = encode(util.err("KOOPHONE.API.1000", "Task not found."))

function M.task(cfg, task_id)
  local v = T:get(task_id)
  if not v then return 400, NOT_FOUND end
  local now = ngx.now()
  local p1 = find(v, "\n", 1, true)
  local p2 = find(v, "\n", p1 + 1, true)
  if now >= tonumber(sub(v, 1, p1 - 1)) then return 200, sub(v, p1 + 1, p2 - 1) end
  local parts, n, pos, len = {}, 0, p2 + 1, #v
  while pos <= len do
    local e = find(v, "\n", pos, true) or len + 1
    local p = pos
    n = n + 1
    while true do
      local t1 = find(v, "\t", p, true)
      if not t1 or t1 > e then parts[n] = sub(v, p, e - 1); break end
      local t2 = find(v, "\t", t1 + 1, true)
      if now < tonumber(sub(v, p, t1 - 1)) then parts[n] = sub(v, t1 + 1, t2 - 1); break end
      p = t2 + 1
    end
    pos = e + 1
  end
  return 200, TASK_HEAD .. concat(parts, ",") .. TASK_TAIL
end

local LIMITS = { object_name = 100, file_name = 100, object_version = 100, biz_type = 64,
                 content_type = 64, content_md5 = 200, install_package_url = 2000 }
local REQUIRED = { "object_name", "file_name", "object_version", "biz_type", "content_type", "install_package_url" }

function M.install(cfg)
  local body, err = util.read_json()
  if not body then return bad(err) end
  local fi = body.fast_install
  if fi ~= nil and fi ~= 0 and fi ~= 1 and fi ~= "0" and fi ~= "1" then
    return 400, util.err("KOOPHONE.API.3008", "The installation type parameter fast_install is incorrect.")
  end
  for _, k in ipairs(REQUIRED) do
    if body[k] == nil or body[k] == "" then return bad("Parameter " .. k .. " is missing.") end
  end
  for k, max in pairs(LIMITS) do
    local v = body[k]
    if v ~= nil then
      if type(v) ~= "string" then return bad("Parameter " .. k .. " is invalid: it must be a string.") end
      if #v > max then return bad("Parameter " .. k .. " is invalid: at most " .. max .. " characters.") end
    end
  end
  if not find(body.install_package_url, "^[Hh][Tt][Tt][Pp][Ss]?://") then
    return bad("Parameter install_package_url is invalid: it must be an http(s) URL.")
  end
  local size = body.object_size
  if size == nil then return bad("Parameter object_size is missing.") end
  local mb
  if type(size) == "number" then
    if size >= 0 and size % 1 == 0 then mb = size end
  elseif type(size) == "string" and find(size, "^%d+$") then
    mb = tonumber(size)
  end
  if not mb then return 400, util.err("KOOPHONE.API.62006", "The app package size is not a digit.") end
  if mb > cfg.max_app_size_mb then return 400, util.err("KOOPHONE.API.62006", "The app package is too large.") end
  local e = check_ids(body.instance_id_list, "instance_id_list", 100)
  if e then return bad(e) end
  local ids = body.instance_id_list
  local seed = cfg.seed
  local sdk = cfg.vendor == "sdk"
  local task_id = (sdk and "FULFILL" or "ZGCA") .. util.b64id(seed, "install-task", util.reserve("task", 1))
  local first = util.reserve("job", #ids)
  -- object_name is the package name the app gets (SDK InstallAppReq)
  local pkg, version = body.object_name, body.object_version
  local name = (body.file_name:gsub("%.[Aa][Pp][Kk]$", ""))
  local function landed(id, o, _, finish)
    if o.status == 2 and not fleet.install_silently_fails(cfg, id) then
      state.add_app(id, pkg, version, name, finish)
    end
  end
  local cmd_jobs, status, reply = create_task(cfg, task_id, ids, "install " .. body.object_name,
    function(i) return util.b64id(seed, "install-job", first + i - 1) end, duration_of(cfg, "install"),
    { sdk = sdk, on_job = landed })
  if not cmd_jobs then return status, reply end
  local data = { task_id = task_id, cmd_jobs = cmd_jobs }
  -- the SDK since 3.1.207 (InstallAppResponse.data: TaskDataResult) is flat
  if sdk then return 200, { error_code = "0", error_msg = "OK", data = data } end
  return 200, { error_code = "0", error_msg = "OK", data = { data = data } }
end

return M
