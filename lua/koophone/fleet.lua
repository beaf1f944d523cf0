--- The whole fleet: reboot, reset, backup, status, the instance list and
-- installed apps (KooPhone), phone detail, phone list and batch reset (CPH).
--
-- These are methods of `koophone.client.Client` (this module adds them):
--
--     local rows = assert(client:instance_status { "kp000001", "kp000002" })
--     print(rows[1].state)                    -- "running" (vendor_status 2)
--     for inst, msg in client:each_instance { status = "running" } do
--       if not inst then error(msg) end       -- a page could not be read
--       print(inst.instance_id, inst.state)
--     end
--     local task = assert(client:reset { "kp000001" })   -- then task:wait()
--
-- Limits: the vendor's SDK gives no count limit for `instance_ids` of
-- reboot, batch-reset, backup and batch-query-status; koophone sends at most
-- `max_ids` (client option, default 100) per request, the bound of the
-- sibling calls (async-command, install). Lists are read page by page
-- (batch-query: `page_size` 1..200, default 100; app-list: 1..200, default
-- 200, the SDK's bound; CPH phones: `limit` 1..200, default 100).
--
-- Named states. KooPhone instances (batch-query-status, SDK `StatusResult`):
-- 0 unknown, 1 stopped, 2 running, 3 going_offline, 4 starting, 5 shut_down.
-- CPH phones (Go SDK `model_phone.go`): 1 creating, 2 running, 3 resetting,
-- 4 restarting, 6 frozen, 7 shutting_down, 8 shut_down, -5 reset_failed,
-- -6 restart_failed, -7 abnormal, -8 creation_failed, -9 shutdown_failed.
-- Rows and records carry the name in `state` and the number in
-- `vendor_status`; a row's `status` keeps its meaning everywhere ("ok": we
-- learned the state). Facts and sources: docs/vendor.md.
-- @module koophone.fleet
local errors = require "koophone.errors"
local validate = require "koophone.validate"
local rows = require "koophone.rows"

local M = {}

local fail = errors.fail
local bad = errors.validation

--- KooPhone instance states by number.
M.INSTANCE_STATES = { [0] = "unknown", [1] = "stopped", [2] = "running", [3] = "going_offline",
                      [4] = "starting", [5] = "shut_down" }
--- CPH phone states by number.
M.PHONE_STATES = { [1] = "creating", [2] = "running", [3] = "resetting", [4] = "restarting", [6] = "frozen",
                   [7] = "shutting_down", [8] = "shut_down", [-5] = "reset_failed", [-6] = "restart_failed",
                   [-7] = "abnormal", [-8] = "creation_failed", [-9] = "shutdown_failed" }

local function invert(t)
  local out = {}
  for k, v in pairs(t) do out[v] = k end
  return out
end
local INSTANCE_CODES, PHONE_CODES = invert(M.INSTANCE_STATES), invert(M.PHONE_STATES)

--- A whole number as an integer (lua-cjson gives 2.0 on Lua 5.3+), or nil.
-- @param v number or digit string
-- @treturn ?number
function M.whole(v)
  local n = tonumber(v)
  if n == nil or n % 1 ~= 0 or n ~= n then return nil end
  return tonumber(("%d"):format(n))
end

--- The name of a state number (`"status 9"` for one the SDK does not name).
-- @tparam table names `M.INSTANCE_STATES` or `M.PHONE_STATES`
-- @param v the vendor's number (number or string)
-- @treturn string
-- @treturn ?number the number
function M.state_name(names, v)
  local n = M.whole(v)
  if n == nil then return "unknown", nil end
  return names[n] or ("status " .. errors.text(n)), n
end

M.MAX_PAGE_SIZE = 200 -- app-list (SDK); batch-query and CPH list: the emulator's and CPH's bound
M.MAX_PAGES = 100000  -- a server that never ends its list stops here

-- the helpers koophone.client shares (set by extend)
local H = {}

--- The methods this module adds to the client (see `extend`).
-- @type Client
local Client = {}


local function instance_ids(self, ids, opts)
  local ok, err = validate.ids("instance_ids", ids, self.max_ids)
  if ok then ok, err = H.check_call_opts(opts) end
  return ok, err
end

--- Reboots instances (`POST /v1/instances/reboot`, SDK BatchRebootInstance).
-- The reply has no per-instance result: a row "ok" means the vendor took
-- the order; follow with `instance_status` (or the workflow's
-- `wait_running`). One unknown id makes the vendor refuse the whole request.
-- @tparam {string,...} ids instance ids (1..`max_ids`, default 100)
-- @tparam[opt] table opts `request_id`, `timeout`
-- @treturn {table,...}|nil one row per id; the list has `request_id`, `attempts`
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function Client:reboot(ids, opts)
  local ok, err = instance_ids(self, ids, opts)
  if not ok then return fail(err) end
  local data, res = self:_koophone("POST", "/v1/instances/reboot", { instance_ids = ids }, opts, "none")
  if not data then return fail(res) end
  local out = {}
  for i, id in ipairs(ids) do
    out[i] = { id = id, instance_id = id, status = "ok", request_id = res.request_id,
               attempts = res.attempts, elapsed = res.elapsed }
  end
  out.request_id, out.attempts = res.request_id, res.attempts
  return out
end

--- Resets instances to their image, installed apps gone
-- (`POST /v1/instances/batch-reset`, SDK BatchResetInstance).
-- @tparam {string,...} ids instance ids (1..`max_ids`)
-- @tparam[opt] table opts `request_id`, `timeout`
-- @treturn koophone.task.Task|nil a task (kind "reset"), followed with the task query
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function Client:reset(ids, opts)
  local ok, err = instance_ids(self, ids, opts)
  if not ok then return fail(err) end
  local data, res = self:_koophone("POST", "/v1/instances/batch-reset", { instance_ids = ids }, opts)
  if not data then return fail(res) end
  local task, terr = self:_task_from_jobs("reset", ids, data, res)
  if not task then return fail(terr) end
  return task
end

--- Backs instances up (`POST /v1/instances/backup`, SDK BatchBackupInstances).
-- The instance list then shows `backup_status` and `backup_time`.
-- @tparam {string,...} ids instance ids (1..`max_ids`)
-- @tparam[opt] table opts `request_id`, `timeout`
-- @treturn koophone.task.Task|nil a task (kind "backup")
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function Client:backup(ids, opts)
  local ok, err = instance_ids(self, ids, opts)
  if not ok then return fail(err) end
  local data, res = self:_koophone("POST", "/v1/instances/backup", { instance_ids = ids }, opts)
  if not data then return fail(res) end
  local task, terr = self:_task_from_jobs("backup", ids, data, res)
  if not task then return fail(terr) end
  return task
end

--- The status of instances (`POST /v1/instances/batch-query-status`, SDK
-- BatchShowInstance): one row per id, `state` named (unknown, stopped,
-- running, going_offline, starting, shut_down), `vendor_status` the number,
-- `output` the name too (so reports show it); `status` "ok" when the
-- vendor answered for the id.
-- @tparam {string,...} ids instance ids (1..`max_ids`)
-- @tparam[opt] table opts `request_id`, `timeout`
-- @treturn {table,...}|nil rows in the order given; the list has `request_id`, `attempts`
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function Client:instance_status(ids, opts)
  local ok, err = instance_ids(self, ids, opts)
  if not ok then return fail(err) end
  local data, res = self:_koophone("POST", "/v1/instances/batch-query-status", { instance_ids = ids }, opts)
  if not data then return fail(res) end
  if type(data.status_results) ~= "table" then
    return fail(H.decode_fail(res, "reply has no 'status_results' list"))
  end
  local by_id = {}
  for _, item in ipairs(data.status_results) do
    if type(item) == "table" and rows.text(item.instance_id) then by_id[rows.text(item.instance_id)] = item end
  end
  local out = {}
  for i, id in ipairs(ids) do
    local item = by_id[id]
    local row
    if item and tonumber(item.status) then
      local name, n = M.state_name(M.INSTANCE_STATES, item.status)
      row = { id = id, instance_id = id, status = "ok", state = name, vendor_status = n, output = name }
    else
      row = rows.from_error(id, "instance_id", errors.new { kind = "protocol",
        message = item and "the reply has no status for this instance" or "the reply has no row for this instance" })
    end
    row.request_id, row.attempts, row.elapsed = res.request_id, res.attempts, res.elapsed
    out[i] = row
  end
  out.request_id, out.attempts = res.request_id, res.attempts
  return out
end

-- "a b" -> "a%20b" (query string values)
local function urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

local TIME_FORMAT = "^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d$"

local INSTANCE_FILTER = validate.set { "instance_id", "instance_name", "query_start_time", "query_end_time",
  "pool_scene_tag", "order", "order_by", "pool_name", "status", "page_size", "request_id", "timeout" }

-- A state filter (name or number) -> the number, or nil, err.
local function state_filter(field, v, names, codes)
  if v == nil then return true end
  local n = type(v) == "number" and v or codes[v]
  if n == nil or names[n] == nil then
    local list = {}
    for k, name in pairs(names) do list[#list + 1] = ("%s (%d)"):format(name, k) end
    table.sort(list)
    return nil, bad(field, "must be one of " .. table.concat(list, ", ") .. "; got " .. tostring(v))
  end
  return n
end

-- Checks an instance filter; returns the query string (without paging), the
-- state wanted (or false), the page size.
local function instance_query(filter)
  if filter == nil then filter = {} end
  if type(filter) ~= "table" then return nil, bad("filter", "must be a table") end
  local ok, err = validate.known_keys("filter field", filter, INSTANCE_FILTER)
  if not ok then return nil, err end
  local parts = {}
  for _, k in ipairs { "instance_id", "instance_name", "pool_name", "order_by" } do
    if filter[k] ~= nil then
      ok, err = validate.text(k, filter[k], 128, false)
      if not ok then return nil, err end
      parts[#parts + 1] = k .. "=" .. urlencode(filter[k])
    end
  end
  for _, k in ipairs { "query_start_time", "query_end_time" } do
    local v = filter[k]
    if v ~= nil then
      if type(v) ~= "string" or not v:match(TIME_FORMAT) then
        return nil, bad(k, "must be a UTC time \"YYYY-MM-DD HH:MM:SS\" (the SDK's format), got " .. tostring(v))
      end
      parts[#parts + 1] = k .. "=" .. urlencode(v)
    end
  end
  local tag = filter.pool_scene_tag
  if tag ~= nil and tag ~= "CLOUD_PHONE" and tag ~= "CLOUD_APP" then
    return nil, bad("pool_scene_tag", "must be \"CLOUD_PHONE\" or \"CLOUD_APP\", got " .. tostring(tag))
  end
  if tag then parts[#parts + 1] = "pool_scene_tag=" .. tag end
  local order = filter.order
  if order ~= nil and order ~= "asc" and order ~= "desc" then
    return nil, bad("order", "must be \"asc\" or \"desc\", got " .. tostring(order))
  end
  if order then parts[#parts + 1] = "order=" .. order end
  local want
  want, err = state_filter("status", filter.status, M.INSTANCE_STATES, INSTANCE_CODES)
  if not want then return nil, err end
  local size = filter.page_size or 100
  ok, err = validate.integer("page_size", size, 1, M.MAX_PAGE_SIZE)
  if ok then ok, err = validate.seconds("timeout", filter.timeout, true) end
  if ok and filter.request_id ~= nil then ok, err = validate.path_id("request_id", filter.request_id) end
  if not ok then return nil, err end
  return table.concat(parts, "&"), filter.status ~= nil and want, size
end

-- A lazy list: `fetch(page) -> items, total | nil, err` (page from 1),
-- `keep(item) -> item or nil`. Yields kept items one by one, holding one
-- page at a time; a failed page yields `false, message, err` once, then ends.
local function pager(fetch, size, keep)
  local page, items, i, fetched, total, finished = 0, nil, 0, 0, nil, false
  return function()
    while true do
      if items and i < #items then
        i = i + 1
        local item = keep(items[i])
        if item then return item end
      else
        if finished then return nil end
        page = page + 1
        local list, t = fetch(page)
        if not list then
          finished, items = true, nil
          return false, tostring(t), t
        end
        items, i = list, 0
        fetched = fetched + #list
        total = tonumber(t) or total
        finished = #list < size or (total ~= nil and fetched >= total) or page >= M.MAX_PAGES
      end
    end
  end
end

-- Collects a pager into a list (`total` = the vendor's count).
local function collect(iter, totals)
  local out = {}
  -- a plain loop, not `for ... in`: Lua 5.1 cannot yield (a wait inside a
  -- koophone.spawn coroutine) from a generic for's iterator
  while true do
    local item, msg, err = iter()
    if item == nil then break end
    if not item then return nil, msg, err end
    out[#out + 1] = item
  end
  out.total = totals.total
  return out
end

-- A list of tables from a reply, or nil.
local function item_list(v)
  if type(v) ~= "table" then return nil end
  for _, x in ipairs(v) do if type(x) ~= "table" then return nil end end
  if next(v) ~= nil and #v == 0 then return nil end
  return v
end

local function instance_record(r)
  r.id = rows.text(r.instance_id)
  r.state, r.vendor_status = M.state_name(M.INSTANCE_STATES, r.running_status)
  return r
end

--- The instances, lazily: an iterator over `GET /v1/instances/batch-query`
-- (SDK ListInstances) that reads one page at a time, so a fleet of any
-- size never sits in memory at once. Each page's `x-request-id` goes in the
-- query string, where the SDK has it (and in the header).
--
--     for inst, msg in client:each_instance { status = "running" } do
--       if not inst then error(msg) end
--       print(inst.instance_id, inst.state)
--     end
--
-- When a page fails the iterator returns `false, message, err` once, then ends.
-- On Lua 5.1 (not LuaJIT), inside a `koophone.spawn` coroutine, call the
-- iterator in a `while` loop instead of `for ... in`: 5.1 cannot yield
-- from a generic for's iterator.
-- @tparam[opt] table filter `instance_id`, `instance_name` (substring),
--   `query_start_time`, `query_end_time` ("YYYY-MM-DD HH:MM:SS", UTC),
--   `pool_scene_tag` ("CLOUD_PHONE"/"CLOUD_APP"), `pool_name`, `order`
--   ("asc"/"desc"), `order_by`, `status` (a state name or number, filtered
--   here: the API has no status filter), `page_size` (1..200, default 100),
--   `request_id` (used for every page), `timeout`
-- @treturn function|nil the iterator; each record is the vendor's row plus
--   `id`, `state` (named `running_status`) and `vendor_status`
-- @treturn ?string message on bad input (nothing sent)
-- @treturn ?table err on bad input
function Client:each_instance(filter)
  local iter, err = self:_instance_pager(filter)
  if not iter then return fail(err) end
  return iter
end

-- each_instance's iterator and the table its pages fill `total` in.
function Client:_instance_pager(filter)
  local query, want, size = instance_query(filter)
  if not query then return nil, want end
  local totals = {}
  local iter = pager(function(page)
    local rid = filter and filter.request_id or self.engine:uuid()
    local path = ("/v1/instances/batch-query?x-request-id=%s&page_no=%d&page_size=%d%s%s"):format(
      rid, page, size, query ~= "" and "&" or "", query)
    local data, res = self:_koophone("GET", path, nil, { request_id = rid, timeout = filter and filter.timeout })
    if not data then return nil, res end
    local list = item_list(data.result)
    if not list then return nil, H.decode_fail(res, "reply has no 'result' list") end
    totals.total = M.whole(data.total_count)
    return list, data.total_count
  end, size, function(r)
    r = instance_record(r)
    if want and r.vendor_status ~= want then return nil end
    return r
  end)
  return iter, totals
end

--- Every instance (`GET /v1/instances/batch-query`, every page) in one
-- list; for large fleets prefer `each_instance`.
-- @tparam[opt] table filter as for `each_instance`
-- @treturn {table,...}|nil records (see `each_instance`); `total` is the
--   vendor's `total_count` (before a `status` filter)
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function Client:instances(filter)
  local iter, totals = self:_instance_pager(filter)
  if not iter then return fail(totals) end
  return collect(iter, totals)
end

local APP_TYPES = { system = 1, third_party = 2, [1] = 1, [2] = 2 }

-- apps' pages (checked options), `total` filled in `totals`.
local function apps_pager(self, instance_id, size, opts, totals)
  local extra = opts.app_type and ("&app_type=" .. APP_TYPES[opts.app_type]) or ""
  return pager(function(page)
    local path = ("/v1/instances/%s/app-list?page_no=%d&page_size=%d%s"):format(instance_id, page, size, extra)
    local data, res = self:_koophone("GET", path, nil, opts)
    if not data then return nil, res end
    local list = item_list(data.result)
    if not list then return nil, H.decode_fail(res, "reply has no 'result' list") end
    totals.total = M.whole(data.total_count)
    return list, data.total_count
  end, size, function(a)
    return { app_name = rows.text(a.app_name), app_version = rows.text(a.app_version),
             app_pkg = rows.text(a.app_pkg), icon_url = rows.text(a.icon_url) }
  end)
end

local APPS_OPTIONS = validate.set { "app_type", "page_size", "request_id", "timeout" }

--- The apps installed on an instance (`GET /v1/instances/{id}/app-list`,
-- SDK ListInstanceApp), every page.
-- @tparam string instance_id
-- @tparam[opt] table opts `app_type` (1 or "system", 2 or "third_party";
--   default both), `page_size` (1..200, default 200), `request_id`, `timeout`
-- @treturn {table,...}|nil `{app_name, app_version, app_pkg, icon_url}`
--   per app; `total` is the vendor's `total_count`
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function Client:apps(instance_id, opts)
  local ok, err = validate.path_id("instance_id", instance_id)
  if ok and #instance_id > validate.limits.id_chars then
    ok, err = nil, bad("instance_id", ("is %d characters, at most %d allowed"):format(#instance_id,
      validate.limits.id_chars), validate.limits.id_chars)
  end
  opts = opts or {}
  if ok and type(opts) ~= "table" then ok, err = nil, bad("opts", "must be a table") end
  if ok then ok, err = validate.known_keys("option", opts, APPS_OPTIONS) end
  if ok and opts.app_type ~= nil and not APP_TYPES[opts.app_type] then
    ok, err = nil, bad("app_type", "must be 1 (\"system\") or 2 (\"third_party\"), got " .. tostring(opts.app_type))
  end
  local size = opts.page_size or M.MAX_PAGE_SIZE
  if ok then ok, err = validate.integer("page_size", size, 1, M.MAX_PAGE_SIZE) end
  if ok then ok, err = H.check_call_opts { request_id = opts.request_id, timeout = opts.timeout } end
  if not ok then return fail(err) end
  local totals = {}
  return collect(apps_pager(self, instance_id, size, opts, totals), totals)
end

local function phone_record(p)
  p.id = rows.text(p.phone_id)
  p.state, p.vendor_status = M.state_name(M.PHONE_STATES, p.status)
  return p
end

--- One cloud phone (`GET /v1/{project_id}/cloud-phone/phones/{phone_id}`,
-- CPH ShowCloudPhoneDetail).
-- @tparam string phone_id
-- @tparam[opt] table opts `request_id`, `timeout`
-- @treturn table|nil the vendor's fields (`status` the number, e.g. 2, -6)
--   plus `id`, `state` (named: "running", "restart_failed", ...) and
--   `vendor_status`
-- @treturn ?string message on failure (one line; an unknown phone is an
--   HTTP 404 from the vendor)
-- @treturn ?table err on failure (see `koophone.errors`)
function Client:phone(phone_id, opts)
  local ok, err = validate.path_id("phone_id", phone_id)
  if ok and #phone_id > validate.limits.phone_id_chars then
    ok, err = nil, bad("phone_id", ("is %d characters, at most %d allowed"):format(#phone_id,
      validate.limits.phone_id_chars), validate.limits.phone_id_chars)
  end
  if ok then ok, err = H.check_call_opts(opts) end
  if not ok then return fail(err) end
  local body, res = self:_cph("GET", "/cloud-phone/phones/" .. phone_id, nil, opts)
  if not body then return fail(res) end
  if body.status == nil or tonumber(body.status) == nil then
    return fail(H.decode_fail(res, "reply has no 'status'"))
  end
  return phone_record(body)
end

local PHONE_FILTER = validate.set { "phone_name", "server_id", "status", "type", "offset", "limit",
                                    "request_id", "timeout" }

--- The cloud phones, lazily (`GET /v1/{project_id}/cloud-phone/phones`, CPH
-- ListCloudPhones): an iterator reading one page at a time, as
-- `each_instance` does.
-- @tparam[opt] table filter `phone_name` (substring), `server_id`,
--   `status` (a state name or number, filtered by the vendor), `type`
--   (0 normal, 1 trial), `offset` (where to start, default 0), `limit`
--   (page size, 1..200, default 100), `request_id`, `timeout`
-- @treturn function|nil the iterator; records have the vendor's fields plus
--   `id`, `state`, `vendor_status`
-- @treturn ?string message on bad input (nothing sent)
-- @treturn ?table err on bad input
function Client:each_phone(filter)
  local iter, err = self:_phone_pager(filter)
  if not iter then return fail(err) end
  return iter
end

-- each_phone's iterator and the table its pages fill `total` in.
function Client:_phone_pager(filter)
  filter = filter or {}
  if type(filter) ~= "table" then return nil, bad("filter", "must be a table") end
  local ok, err = validate.known_keys("filter field", filter, PHONE_FILTER)
  local parts = {}
  for _, k in ipairs { "phone_name", "server_id" } do
    if ok and filter[k] ~= nil then
      ok, err = validate.text(k, filter[k], 64, false)
      parts[#parts + 1] = ok and (k .. "=" .. urlencode(filter[k])) or nil
    end
  end
  local want
  if ok then
    want, err = state_filter("status", filter.status, M.PHONE_STATES, PHONE_CODES)
    ok = want ~= nil
  end
  if ok and filter.status ~= nil then parts[#parts + 1] = ("status=%d"):format(want) end
  if ok and filter.type ~= nil then
    ok, err = validate.integer("type", filter.type, 0, 1)
    parts[#parts + 1] = ok and ("type=%d"):format(filter.type) or nil
  end
  local offset, limit = filter.offset or 0, filter.limit or 100
  if ok then ok, err = validate.integer("offset", offset, 0, 2^31 - 1) end
  if ok then ok, err = validate.integer("limit", limit, 1, M.MAX_PAGE_SIZE) end
  if ok then ok, err = H.check_call_opts { request_id = filter.request_id, timeout = filter.timeout } end
  if not ok then return nil, err end
  local query = #parts > 0 and ("&" .. table.concat(parts, "&")) or ""
  local totals = {}
  local iter = pager(function(page)
    local path = ("/cloud-phone/phones?offset=%d&limit=%d%s"):format(offset + (page - 1) * limit, limit, query)
    local body, res = self:_cph("GET", path, nil, filter)
    if not body then return nil, res end
    local list = item_list(body.phones)
    if not list then return nil, H.decode_fail(res, "reply has no 'phones' list") end
    local count = M.whole(body.count)
    totals.total = count
    -- `count` is the total from `offset` 0: this listing started at `offset`
    return list, count and math.max(0, count - offset)
  end, limit, phone_record)
  return iter, totals
end

--- Every cloud phone (CPH ListCloudPhones, every page) in one list.
-- @tparam[opt] table filter as for `each_phone`
-- @treturn {table,...}|nil records; `total` is the vendor's `count`
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function Client:phones(filter)
  local iter, totals = self:_phone_pager(filter)
  if not iter then return fail(totals) end
  return collect(iter, totals)
end

--- Resets cloud phones to their image
-- (`POST /v1/{project_id}/cloud-phone/phones/batch-reset`, CPH
-- ResetCloudPhone: the body and reply of batch-restart).
-- @tparam table phones phone ids, or `{phone_id=, property={...}}` tables
--   (at most `max_restart` per request, default 100)
-- @tparam[opt] table opts `image_id`, `request_id`, `timeout`
-- @treturn koophone.task.Task|nil a task (kind "phone_reset") followed
--   with ListJobs by request id
-- @treturn ?string message on failure (one line)
-- @treturn ?table err on failure (see `koophone.errors`)
function Client:reset_phones(phones, opts)
  return self:_cph_batch("phone_reset", "/cloud-phone/phones/batch-reset", phones, opts)
end

--- Adds this module's methods to `koophone.client`'s Client (called once
-- by koophone.client).
-- @tparam table client_module koophone.client
-- @tparam table helpers `check_call_opts`, `decode_fail`
function M.extend(client_module, helpers)
  for k, v in pairs(helpers) do H[k] = v end
  for name, fn in pairs(Client) do client_module.Client[name] = fn end
end

return M
