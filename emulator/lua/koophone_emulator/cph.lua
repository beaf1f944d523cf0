-- CPH API handlers: batch-restart, ShowJob, ListJobs.
local util = require "koophone_emulator.util"
local fleet = require "koophone_emulator.fleet"
local acct = require "koophone_emulator.accounting"

local ngx = ngx
local J = ngx.shared.kp_jobs
local find, tonumber = string.find, tonumber

local M = {}

local function bad(field) return 400, util.err("CPS.0004", "Parameter: " .. field .. " is invalid.") end

function M.restart(cfg)
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
  local dur_default = tonumber(cfg.durations.restart) or tonumber(cfg.durations.default) or 1
  local jobs, job_ids = {}, {}
  for i = 1, n do
    local id = phones[i].phone_id
    if not fleet.is_phone(cfg, id) then
      jobs[i] = { phone_id = id, error_code = "CPS.0004", error_msg = "Parameter: phone_id is invalid." }
    else
      local o = fleet.outcome(cfg, id, "restart", "phone")
      acct.exec(id, "restart")
      local job_id = util.hex32(seed, "cph-job", first + i - 1)
      local dur = o.duration or dur_default
      local rec = {
        request_id = request_id, job_id = job_id, phone_id = id,
        server_id = ngx.md5("server:" .. id), begin = now, finish = now + dur,
        status = o.status,
        error_code = o.status ~= 2 and o.error_code or nil,
        error_msg = o.status ~= 2 and o.error_msg or nil,
        execute_msg = o.execute_msg,
      }
      J:set(job_id, util.encode(rec))
      job_ids[#job_ids + 1] = job_id
      jobs[i] = { phone_id = id, job_id = job_id }
    end
  end
  J:set("R:" .. request_id, table.concat(job_ids, ","))
  return 200, { request_id = request_id, jobs = jobs }
end

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
  local offset, limit = 0, 100
  if args.offset ~= nil then
    if type(args.offset) ~= "string" or not find(args.offset, "^%d+$") then return bad("offset") end
    offset = tonumber(args.offset)
  end
  if args.limit ~= nil then
    if type(args.limit) ~= "string" or not find(args.limit, "^%d+$") then return bad("limit") end
    limit = tonumber(args.limit)
    if limit < 1 or limit > 100 then return bad("limit") end
  end
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

return M
