-- KooPhone fleet operations (Java SDK KooPhoneMeta.java): reboot, batch-reset,
-- backup, batch-query-status, batch-query (list) and app-list. Handlers return
-- status, body (table or JSON string), headers. See docs/vendor.md.
local util = require "koophone_emulator.util"
local fleet = require "koophone_emulator.fleet"
local acct = require "koophone_emulator.accounting"
local kp = require "koophone_emulator.kp"
local state = require "koophone_emulator.state"

local ngx = ngx
local find, format, concat, tonumber = string.find, string.format, table.concat, tonumber
local encode = util.encode

local M = {}

local function bad(msg) return 400, util.err("KOOPHONE.API.1000", msg) end

local function no_permission(ids)
  return 400, util.err("KOOPHONE.API.1001", "Insufficient permissions on instances: " .. concat(ids, ", ") .. ".")
end

-- the body {instance_ids}; returns ids or nil, status, body
local function read_ids(cfg)
  local body, err = util.read_json()
  if not body then return nil, bad(err) end
  local e = kp.check_ids(body.instance_ids, "instance_ids", cfg.max_instance_ids)
  if e then return nil, bad(e) end
  return body.instance_ids
end

-- the duration of an operation on one instance: a `commands` entry or an
-- override for the operation's name, else durations[name], else default
local function op_duration(cfg, id, name)
  local o = fleet.outcome(cfg, id, name, "instance")
  return o.duration or kp.duration_of(cfg, name), o
end

--- POST /v1/instances/reboot {instance_ids} -> no data. An unknown id
-- refuses the whole request (KOOPHONE.API.1001): the reply has no per-id rows.
function M.reboot(cfg)
  local ids, st, b = read_ids(cfg)
  if not ids then return st, b end
  local unknown = {}
  for _, id in ipairs(ids) do
    if not fleet.is_instance(cfg, id) then unknown[#unknown + 1] = id end
  end
  if #unknown > 0 then return no_permission(unknown) end
  ngx.update_time()
  local now = ngx.now()
  for _, id in ipairs(ids) do
    acct.exec(id, "reboot")
    state.boot(id, now, (op_duration(cfg, id, "reboot")))
  end
  return 200, { error_code = "0", error_msg = "ok" }
end

local function task_op(cfg, name, on_job)
  local ids, st, b = read_ids(cfg)
  if not ids then return st, b end
  local seed = cfg.seed
  local task_id = util.hex32(seed, "task", util.reserve("task", 1))
  local first = util.reserve("job", #ids)
  local cmd_jobs, status, reply = kp.create_task(cfg, task_id, ids, name,
    function(i) return util.hex32(seed, "job", first + i - 1) end, kp.duration_of(cfg, name), { on_job = on_job })
  if not cmd_jobs then return status, reply end
  return 200, { error_code = "0", error_msg = "ok", data = { task_id = task_id, cmd_jobs = cmd_jobs } }
end

--- POST /v1/instances/batch-reset {instance_ids} -> {task_id, cmd_jobs}:
-- the instance restarts (starting until its job ends) without its installed apps.
function M.reset(cfg)
  return task_op(cfg, "reset", function(id, _, now, finish)
    state.clear_apps(id)
    state.boot(id, now, finish - now)
  end)
end

--- POST /v1/instances/backup {instance_ids} -> {task_id, cmd_jobs}.
function M.backup(cfg)
  return task_op(cfg, "backup", function(id, o, now, finish)
    state.backup(id, now, finish - now, o.status == 2)
  end)
end

--- POST /v1/instances/batch-query-status {instance_ids} -> status_results;
-- an unknown id has status 0 (unknown).
function M.status(cfg)
  local ids, st, b = read_ids(cfg)
  if not ids then return st, b end
  local now = ngx.now()
  local rows = {}
  for i, id in ipairs(ids) do
    local s = fleet.is_instance(cfg, id) and state.instance_status(id, now) or state.UNKNOWN
    rows[i] = { instance_id = id, status = s }
  end
  return 200, { error_code = "0", error_msg = "ok", data = { status_results = rows } }
end

-- a positive integer query parameter; returns n or nil, message
local function page_arg(args, name, max, required)
  local v = args[name]
  if v == nil then
    if required then return nil, "Parameter " .. name .. " is missing." end
    return false
  end
  if type(v) ~= "string" or not find(v, "^%d+$") or #v > 9 or tonumber(v) < 1 or (max and tonumber(v) > max) then
    return nil, "Parameter " .. name .. " is invalid: it must be an integer from 1"
      .. (max and (" to " .. max) or "") .. "."
  end
  return tonumber(v)
end

-- the listed fleet's instances were "created" one second apart from here
local CREATED = 1735689600 -- 2025-01-01T00:00:00Z

-- "2023-08-15 14:30:45" (UTC, the SDK's format) -> epoch seconds, or nil
local function parse_time(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, h, mi, se = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d) (%d%d):(%d%d):(%d%d)$")
  if not y then return nil end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo < 1 or mo > 12 or d < 1 or d > 31 or tonumber(h) > 23 or tonumber(mi) > 59 or tonumber(se) > 59 then
    return nil
  end
  -- days from civil (proleptic Gregorian), no os.time: it would use local time
  local yy = mo <= 2 and y - 1 or y
  local era = math.floor(yy / 400)
  local yoe = yy - era * 400
  local mp = (mo + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(se)
end

local POOL = "emulator-pool"

local function instance_row(cfg, id, now)
  local n = id:match("^kp(%d+)$")
  local row = {
    instance_id = id, instance_name = "phone-" .. id, region = "cn-north-4",
    instance_sku = "professional | 8 vCPUs | 16GB | 10GB storage | up to 720p",
    frozen_status = 0, running_status = state.instance_status(id, now), login_status = 0,
    assign_status = 1, assign_user = "", billing_mode = "PRE_PAID",
    project_id = cfg.project_id, project_name = cfg.project_name,
    phone_id = n and ("ph" .. n) or ngx.md5("phone:" .. id), member_name = "", account_name = cfg.iam.domain,
    region_name = "CN North-Beijing4", region_name_en = "CN North-Beijing4",
  }
  local bs, bt = state.backup_status(id, now)
  if bs then row.backup_status, row.backup_time = bs, bt end
  return encode(row)
end

--- GET /v1/instances/batch-query?x-request-id=&page_no=&page_size=[&filters]
-- -> {result, page_no, page_size, total_count}. Paging is arithmetic over the
-- fleet's index, so listing 100,000 instances holds one page at a time.
function M.list(cfg)
  local args = ngx.req.get_uri_args(100)
  local rid = args["x-request-id"]
  if type(rid) ~= "string" or rid == "" then return bad("Missing mandatory parameter: x-request-id.") end
  ngx.header["X-Request-Id"] = rid
  local page_no, e1 = page_arg(args, "page_no", nil, true)
  if not page_no then return bad(e1) end
  local page_size, e2 = page_arg(args, "page_size", cfg.max_page_size, true)
  if not page_size then return bad(e2) end
  for _, k in ipairs { "instance_id", "instance_name", "pool_scene_tag", "order", "order_by", "pool_name",
                       "query_start_time", "query_end_time" } do
    local v = args[k]
    if v ~= nil and (type(v) ~= "string" or #v > 128) then
      return bad("Parameter " .. k .. " is invalid: one string of at most 128 characters.")
    end
  end
  if args.order ~= nil and args.order ~= "asc" and args.order ~= "desc" then
    return bad("Parameter order is invalid: asc or desc.")
  end
  local tag = args.pool_scene_tag
  if tag ~= nil and tag ~= "CLOUD_PHONE" and tag ~= "CLOUD_APP" then
    return bad("Parameter pool_scene_tag is invalid: CLOUD_PHONE or CLOUD_APP.")
  end
  local total = fleet.count(cfg, "instance")
  local lo, hi = 1, total
  for _, k in ipairs { "query_start_time", "query_end_time" } do
    if args[k] ~= nil then
      local t = parse_time(args[k])
      if not t then return bad("Parameter " .. k .. " is invalid: format yyyy-MM-dd HH:mm:ss (UTC).") end
      local i = t - CREATED + 1
      if k == "query_start_time" then lo = math.max(lo, math.ceil(i)) else hi = math.min(hi, math.floor(i)) end
    end
  end
  if (tag ~= nil and tag ~= "CLOUD_PHONE") or (args.pool_name ~= nil and args.pool_name ~= POOL) then hi = 0 end
  -- the matching indexes: a range, or (with id/name filters) an explicit list
  local list
  if args.instance_id ~= nil then
    local i = fleet.index_of(cfg, "instance", args.instance_id)
    list = (i and i >= lo and i <= hi) and { i } or {}
  end
  if args.instance_name ~= nil then
    local want = args.instance_name
    local src = list
    list = {}
    if src then
      for _, i in ipairs(src) do
        if find("phone-" .. fleet.id_at(cfg, "instance", i), want, 1, true) then list[#list + 1] = i end
      end
    else
      for i = lo, hi do
        if find("phone-" .. fleet.id_at(cfg, "instance", i), want, 1, true) then list[#list + 1] = i end
      end
    end
  end
  local count = list and #list or math.max(0, hi - lo + 1)
  local desc = args.order == "desc"
  local now = ngx.now()
  local rows = {}
  local first = (page_no - 1) * page_size + 1
  for k = first, math.min(count, first + page_size - 1) do
    local pos = desc and (count - k + 1) or k
    local i = list and list[pos] or (lo + pos - 1)
    rows[#rows + 1] = instance_row(cfg, fleet.id_at(cfg, "instance", i), now)
  end
  return 200, '{"error_code":"0","error_msg":"ok","data":{"result":[' .. concat(rows, ",")
    .. format('],"page_no":%d,"page_size":%d,"total_count":%d,"error_code":"0","error_msg":"ok"}}',
      page_no, page_size, count)
end

--- GET /v1/instances/{instance_id}/app-list?page_no=&page_size=[&app_type=]
-- -> {result[{app_name, app_version, app_pkg, icon_url}], page_no, page_size, total_count}.
function M.apps(cfg, id)
  if #id > 32 then return bad("Parameter instance_id is invalid: at most 32 characters.") end
  local args = ngx.req.get_uri_args(100)
  local page_no, e1 = page_arg(args, "page_no", nil, true)
  if not page_no then return bad(e1) end
  local page_size, e2 = page_arg(args, "page_size", cfg.max_page_size, true)
  if not page_size then return bad(e2) end
  local app_type = args.app_type
  if app_type ~= nil then
    if app_type ~= "1" and app_type ~= "2" then
      return bad("Parameter app_type is invalid: 1 (system) or 2 (third-party).")
    end
    app_type = tonumber(app_type)
  end
  if not fleet.is_instance(cfg, id) then return no_permission { id } end
  local apps = state.apps(id, ngx.now(), app_type)
  local rows = {}
  local first = (page_no - 1) * page_size + 1
  for k = first, math.min(#apps, first + page_size - 1) do
    local a = apps[k]
    rows[#rows + 1] = encode { app_name = a.app_name, app_version = a.app_version, app_pkg = a.app_pkg,
                               icon_url = a.icon_url }
  end
  return 200, '{"error_code":"0","error_msg":"ok","data":{"result":[' .. concat(rows, ",")
    .. format('],"page_no":%d,"page_size":%d,"total_count":%d}}', page_no, page_size, #apps)
end

return M
