-- CPH API handlers (Go SDK services/cph/v1/cph_meta.go): batch-restart,
-- batch-reset, ShowJob, ListJobs, phone detail, phone list.
local util = require "koophone_emulator.util"
local fleet = require "koophone_emulator.fleet"
local acct = require "koophone_emulator.accounting"
local state = require "koophone_emulator.state"

local ngx = ngx
local J = ngx.shared.kp_jobs
local find, tonumber = string.find, tonumber

local M = {}

local function bad(field) return 400, util.err("CPS.0004", "Parameter: " .. field .. " is invalid.") end

-- offset (>= 0, default 0) and limit (1..max, default 100) of a list
-- query; nil and the bad field's name when one is not a number in range
local function paging(args, max)
  local offset, limit = 0, 100
  if args.offset ~= nil then
    if type(args.offset) ~= "string" or not find(args.offset, "^%d+$") then return nil, nil, "offset" end
    offset = tonumber(args.offset)
  end
  if args.limit ~= nil then
    if type(args.limit) ~= "string" or not find(args.limit, "^%d+$") then return nil, nil, "limit" end
    limit = tonumber(args.limit)
    if limit < 1 or limit > max then return nil, nil, "limit" end
  end
  return offset, limit
end

-- batch-restart and batch-reset share body, checks and reply; kind is the
-- execution counted ("restart" | "reset") and the phone's state change
local function batch(cfg, kind, dur_name)
  local body = util.read_json()
  if not body then return 400, util.err("CPS.0004", "Parameter: body is invalid.") end
  local phones = body.phones
  local ok, n = util.is_array(phones)
  if not ok or n == 0 or n > cfg.max_restart_phones then return bad("phones") end
  for i = 1, n do
    local p = phones[i]
    if type(p) ~= "table" or not util.is_object(p) then return bad("phones") end
    if type(p.phone_id) ~= "string" or p.phone_id == "" or #p.phone_id > 64 then return bad("phone_id") end
    if p.property ~= nil then
      if type(p.property) ~= "string" then return bad("property") end
      local t = util.decode(p.property)
      if type(t) ~= "table" or not util.is_object(t) then return bad("property") end
    end
  end
  if body.image_id ~= nil and (type(body.image_id) ~= "string" or #body.image_id > 64) then
    return bad("image_id")
  end
  local seed = cfg.seed
  local request_id = util.hex32(seed, "request", util.reserve("request", 1))
  local first = util.reserve("job", n)
  ngx.update_time()
  local now = ngx.now()
  local dur_default = tonumber(cfg.durations[dur_name]) or tonumber(cfg.durations.default) or 1
  local jobs, job_ids, last = {}, {}, now
  for i = 1, n do
    local id = phones[i].phone_id
    if not fleet.is_phone(cfg, id) then
      jobs[i] = { phone_id = id, error_code = "CPS.0004", error_msg = "Parameter: phone_id is invalid." }
    else
      local o = fleet.outcome(cfg, id, kind, "phone")
      acct.exec(id, kind)
      local job_id = util.hex32(seed, "cph-job", first + i - 1)
      local dur = o.duration or dur_default
      state.phone_op(id, kind, now, dur, o.status == 2)
      local rec = {
        request_id = request_id, job_id = job_id, phone_id = id,
        server_id = ngx.md5("server:" .. id), begin = now, finish = now + dur,
        status = o.status,
        error_code = o.status ~= 2 and o.error_code or nil,
        error_msg = o.status ~= 2 and o.error_msg or nil,
        execute_msg = o.execute_msg,
      }
      local kept, status, reply = util.keep(J, "job", job_id, util.encode(rec), rec.finish, cfg.retention)
      if not kept then return status, reply end
      job_ids[#job_ids + 1] = job_id
      if rec.finish > last then last = rec.finish end
      jobs[i] = { phone_id = id, job_id = job_id }
    end
  end
  local kept, status, reply = util.keep(J, "job", "R:" .. request_id, table.concat(job_ids, ","), last, cfg.retention)
  if not kept then return status, reply end
  return 200, { request_id = request_id, jobs = jobs }
end

--- POST /v1/{project_id}/cloud-phone/phones/batch-restart
function M.restart(cfg) return batch(cfg, "restart", "restart") end

--- POST /v1/{project_id}/cloud-phone/phones/batch-reset (same body: phones[{phone_id, property}], image_id)
function M.reset(cfg) return batch(cfg, "reset", "phone-reset") end

local null = util.null

local function view(rec, now)
  local running = now < rec.finish
  return {
    request_id = rec.request_id, job_id = rec.job_id, phone_id = rec.phone_id, server_id = rec.server_id,
    begin_time = util.iso(rec.begin), end_time = running and null or util.iso(rec.finish),
    status = running and 1 or rec.status,
    error_code = (not running and rec.error_code) or null,
    error_msg = (not running and rec.error_msg) or null,
    execute_msg = (not running and rec.execute_msg) or null,
  }
end

function M.job(cfg, job_id)
  local v = J:get(job_id)
  local rec = v and util.decode(v)
  if type(rec) ~= "table" or not rec.job_id then
    return 404, util.err("CPS.0005", "Job not found.")
  end
  return 200, view(rec, ngx.now())
end

function M.jobs(cfg)
  local args = ngx.req.get_uri_args(100)
  local rid, rids = args.request_id, args.request_ids
  local list
  if rids ~= nil then
    if type(rids) ~= "string" or rids == "" then return bad("request_ids") end
    list = util.split(rids, ",")
    if #list > 20 then return bad("request_ids") end
    for _, r in ipairs(list) do if r == "" or #r > 64 then return bad("request_ids") end end
  elseif rid ~= nil then
    if type(rid) ~= "string" or rid == "" or #rid > 64 then return bad("request_id") end
    list = { rid }
  else
    return bad("request_id")
  end
  local offset, limit, field = paging(args, 100)
  if not offset then return bad(field) end
  local ids = {}
  for _, r in ipairs(list) do
    local s = J:get("R:" .. r)
    if s and s ~= "" then
      for _, j in ipairs(util.split(s, ",")) do ids[#ids + 1] = j end
    end
  end
  local now = ngx.now()
  local jobs = {}
  for i = offset + 1, math.min(#ids, offset + limit) do
    local rec = util.decode(J:get(ids[i]) or "null")
    if type(rec) == "table" then jobs[#jobs + 1] = view(rec, now) end
  end
  if #jobs == 0 then
    -- cjson would encode an empty table as {}
    return 200, '{"request_id":' .. util.encode(rids or rid) .. ',"jobs":[],"count":' .. #ids .. '}'
  end
  return 200, { request_id = rids or rid, jobs = jobs, count = #ids }
end

-- phones were "created" one second apart from here (as instances are)
local CREATED = 1735689600 -- 2025-01-01T00:00:00Z

local function imei(id)
  local digits = tostring(ngx.crc32_long("imei:" .. id)) .. tostring(ngx.crc32_long(id .. ":imei"))
  return ("86" .. digits .. "0000000000000"):sub(1, 15)
end

-- the fields ShowCloudPhoneDetail and ListCloudPhones share (Go model_phone.go)
local function phone_view(cfg, id, i, now, status, changed)
  local created = CREATED + i - 1
  return {
    phone_name = "phone-" .. id, server_id = ngx.md5("server:" .. id), phone_id = id,
    phone_model_name = "rx1.cp.c15.d46.e1v1", image_id = ngx.md5("image:" .. cfg.seed):sub(1, 32),
    image_version = "12.0.0", vnc_enable = "false", status = status, type = 0, imei = imei(id),
    traffic_type = "direct", volume_mode = 0, availability_zone = cfg.project_name .. "a",
    metadata = { order_id = "", product_id = "" }, has_encrypt = false,
    create_time = util.iso(created), update_time = util.iso(changed or created),
  }
end

--- GET /v1/{project_id}/cloud-phone/phones/{phone_id}: status 2 running,
-- 3 resetting, 4 restarting, -5 reset failed, -6 restart failed.
function M.phone(cfg, phone_id)
  local i = fleet.index_of(cfg, "phone", phone_id)
  if not i then return 404, util.err("CPS.0005", "Phone not found.") end
  local now = ngx.now()
  local status, changed = state.phone_status(phone_id, now)
  local v = phone_view(cfg, phone_id, i, now, status, changed)
  v.request_id = util.hex32(cfg.seed, "request", util.reserve("request", 1))
  local h = ngx.crc32_long(phone_id)
  v.access_infos = { {
    type = "adb", device_ip = "172.16." .. (h % 250) .. "." .. (h % 251 + 2), phone_ip = "172.16." .. (h % 250) .. "." .. (h % 251 + 2),
    listen_port = 5555, access_ip = "", public_ip = "", intranet_ip = "192.168.0." .. (h % 250 + 2),
    server_ip = "192.168.0." .. (h % 250 + 2), access_port = 20000 + h % 10000,
  } }
  v.property = '{"com.cph.mainkeys":0}'
  v.phone_data_volume = { volume_type = "SSD", volume_size = 16 }
  return 200, v
end

local PHONE_STATUSES = { ["1"] = true, ["2"] = true, ["3"] = true, ["4"] = true, ["6"] = true, ["7"] = true,
  ["8"] = true, ["-5"] = true, ["-6"] = true, ["-7"] = true, ["-8"] = true, ["-9"] = true }

--- GET /v1/{project_id}/cloud-phone/phones?offset=&limit=&phone_name=&server_id=&status=&type=
-- -> {request_id, phones, count}; offset >= 0 (0), limit 1..200 (100).
function M.phones(cfg)
  local args = ngx.req.get_uri_args(100)
  local offset, limit, field = paging(args, 200)
  if not offset then return bad(field) end
  for _, k in ipairs { "phone_name", "server_id" } do
    if args[k] ~= nil and (type(args[k]) ~= "string" or #args[k] > 65) then return bad(k) end
  end
  if args.status ~= nil and not PHONE_STATUSES[args.status] then return bad("status") end
  if args.type ~= nil and args.type ~= "0" and args.type ~= "1" then return bad("type") end
  local now = ngx.now()
  local total = fleet.count(cfg, "phone")
  local list
  if args.phone_name or args.server_id or args.status or args.type then
    -- a filter scans the fleet once (ids only; the status of untouched phones is 2)
    list = {}
    local touched = args.status and state.touched_phones(now) or nil
    local want = tonumber(args.status)
    if args.type ~= "1" then
      for i = 1, total do
        local id = fleet.id_at(cfg, "phone", i)
        local ok = (not args.phone_name or find("phone-" .. id, args.phone_name, 1, true))
          and (not args.server_id or ngx.md5("server:" .. id) == args.server_id)
          and (not want or (touched[id] or 2) == want)
        if ok then list[#list + 1] = i end
      end
    end
  end
  local count = list and #list or total
  local phones = {}
  for k = offset + 1, math.min(count, offset + limit) do
    local i = list and list[k] or k
    local id = fleet.id_at(cfg, "phone", i)
    local status, changed = state.phone_status(id, now)
    phones[#phones + 1] = util.encode(phone_view(cfg, id, i, now, status, changed))
  end
  local rid = util.hex32(cfg.seed, "request", util.reserve("request", 1))
  return 200, '{"request_id":' .. util.encode(rid) .. ',"phones":[' .. table.concat(phones, ",")
    .. '],"count":' .. count .. '}'
end

return M
