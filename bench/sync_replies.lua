-- bench/sync_replies.lua: random sync-command reply bodies (JSON text), and
-- the comparison of the engine's direct path (core.sync_reply: rows built
-- straight from the bytes, src/cmd_rows.c) with the reference path it
-- stands in for (cjson's decode, then core.item_rows, else
-- rows.from_results, as Client:sync_command did before). Used by
-- bench/rows_check.lua (many cases) and spec/rows_spec.lua (a few
-- thousand, in CI). Lua 5.1 - 5.4.
--
--   local replies = require "bench.sync_replies"
--   local gen = replies.generator(seed)
--   local text, ids, res = gen()
--   local how = replies.compare(text, ids, res)  -- "rows" | "items" | "gave_up"; raises on a difference
local core = require "koophone.core"
local rows = require "koophone.rows"
local cjson = require "cjson"

local M = {}

-- cjson configured as the engine's private instance (src/json.c)
local ref = cjson.new()
ref.decode_max_depth(64)
ref.decode_invalid_numbers(false)

local mtype = math.type -- nil before Lua 5.3

local function same(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) == "number" then
    if mtype and mtype(a) ~= mtype(b) then return false end
    return a == b
  end
  if type(a) ~= "table" then return a == b end
  if getmetatable(a) ~= getmetatable(b) then return false end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end
M.same = same

local function show(v, depth)
  depth = depth or 0
  if type(v) == "string" then return ("%q"):format(v) end
  if type(v) ~= "table" or depth > 3 then return tostring(v) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(x, y) return tostring(x) < tostring(y) end)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = tostring(k) .. "=" .. show(v[k], depth + 1) end
  return "{" .. table.concat(parts, ", ") .. "}"
end
M.show = show

-- ---------------------------------------------------------------- generation

--- The pieces of a random JSON reply, over a private Park-Miller generator
-- (the same cases on every Lua version): `rnd(a, b)`, `pick(t)`, `ws()`,
-- `jstr(s, odd)` (a JSON string, escaped in valid ways), `text_value()`,
-- `status_value()`, `key(k, odd)`, `object(fields, odd)`, `TEXTS`,
-- `STATUS`, `OTHER` (also used by bench/task_replies.lua).
-- @tparam number seed
-- @treturn table
function M.pieces(seed)
  local P = {}
  local state = seed % 2147483647
  if state <= 0 then state = state + 2147483646 end
  local function rnd(a, b)
    state = (state * 16807) % 2147483647
    local x = (state - 1) / 2147483646
    if not a then return x end
    if not b then a, b = 1, a end
    return a + math.floor(x * (b - a + 1))
  end
  local function pick(t) return t[rnd(#t)] end
  P.rnd, P.pick = rnd, pick

  local WS = { "", "", "", "", "", " ", "\n", "\r\n  ", "\t" }
  function P.ws() if rnd() < 0.85 then return "" end return pick(WS) end
  local ws = P.ws

  -- a JSON string for s, escaped as cjson does or in other valid ways
  function P.jstr(s, odd)
    local out = {}
    for i = 1, #s do
      local c = s:sub(i, i)
      local b = c:byte()
      if c == '"' then out[i] = '\\"'
      elseif c == "\\" then out[i] = "\\\\"
      elseif c == "\n" then out[i] = rnd() < 0.8 and "\\n" or "\\u000a"
      elseif c == "\t" then out[i] = "\\t"
      elseif c == "/" then out[i] = rnd() < 0.7 and "\\/" or "/"
      elseif b < 32 then out[i] = ("\\u%04x"):format(b)
      elseif odd and rnd() < 0.05 and b < 128 then out[i] = ("\\u%04X"):format(b)
      else out[i] = c end
    end
    return '"' .. table.concat(out) .. '"'
  end
  local jstr = P.jstr

  P.TEXTS = { "12", "12", "", "", "ok", "hello world", "line 1\nline 2", "a/b", "中文 é", 'say "hi"',
              "back\\slash", ("x"):rep(30), "tab\there", "x" }
  local ODD_TEXTS = { "null", "null", "5", "2.5", "true", "false", "{}", "[]", '{"a":1}', "[1,2]", '"\\ud83d\\ude00"',
                      '"\\u0000"', '"\\u4e2d\\u6587"', "-0", "1e2", '"\\x"', '"bad' }
  function P.text_value()
    local r = rnd()
    if r < 0.85 then return jstr(pick(P.TEXTS), true) end
    return pick(ODD_TEXTS)
  end
  P.STATUS = { "2", "2", "2", "2", "-1", "-1", "2.0", "-1.0", "2e0", '"2"', "0", "1", "3", "null", "20", "-10",
               "true", '"x"', "-0", "02", "2.5", "{}", "-" }
  function P.status_value()
    if rnd() < 0.8 then return rnd() < 0.7 and "2" or "-1" end
    return pick(P.STATUS)
  end
  P.OTHER = { "5", '"extra"', "null", "[]", "{}", '{"instance_id":"x","status":2}', "[1,[2,[3]]]", "true",
              '"\\ud800"', "1.5", ("[" ):rep(40) .. ("]"):rep(40) }
  function P.key(k, odd)
    if odd and #k >= 2 and rnd() < 0.05 then return '"' .. k:sub(1, 1) .. ("\\u%04x"):format(k:byte(2)) .. k:sub(3) .. '"' end
    return '"' .. k .. '"'
  end
  local key = P.key

  function P.object(fields, odd) -- fields: { {key, value text}, ... }
    for i = #fields, 2, -1 do
      local j = rnd(i)
      fields[i], fields[j] = fields[j], fields[i]
    end
    local parts = {}
    for i, f in ipairs(fields) do parts[i] = ws() .. key(f[1], odd) .. ws() .. ":" .. ws() .. f[2] .. ws() end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return P
end

--- A generator of random cases: each call returns `text, ids, res` (a reply
-- body, the ids asked for, and what the transport adds: request_id,
-- attempts, elapsed).
-- @tparam number seed
-- @treturn function
function M.generator(seed)
  local P = M.pieces(seed)
  local rnd, pick, ws, jstr, object = P.rnd, P.pick, P.ws, P.jstr, P.object
  local text_value, status_value, TEXTS, OTHER = P.text_value, P.status_value, P.TEXTS, P.OTHER

  local function item(id, odd)
    local fields = {}
    local idv = jstr(id, odd)
    if odd and rnd() < 0.1 then idv = pick { "5", "null", jstr(id .. "x"), jstr(id:upper()), '"' .. id .. '\\u0000"' } end
    if not (odd and rnd() < 0.03) then fields[#fields + 1] = { "instance_id", idv } end
    if not (odd and rnd() < 0.03) then fields[#fields + 1] = { "status", odd and status_value() or "2" } end
    local texts = { "execute_msg", "error_code", "error_msg" }
    if rnd() < 0.2 then texts[4] = "job_id" end
    for _, k in ipairs(texts) do
      if not (odd and rnd() < 0.1) then fields[#fields + 1] = { k, odd and text_value() or jstr(pick(TEXTS)) } end
    end
    if odd and rnd() < 0.1 then fields[#fields + 1] = { pick { "extra", "instanceId", "Status", "" }, pick(OTHER) } end
    if odd and rnd() < 0.05 then -- a duplicate key: the last wins
      local f = fields[rnd(#fields)]
      fields[#fields + 1] = { f[1], f[1] == "status" and status_value() or text_value() }
    end
    if odd and rnd() < 0.02 then return pick { "null", "5", '"x"', "[]", "{}" } end
    return object(fields, odd)
  end

  local ID_FORMS = { "kp%06d", "kp%06d", "kp%06d", "a%d", 'q"%d', "b\\%d", "中%d", "x%dé" }

  return function()
    local n = rnd(1, 32)
    local ids = {}
    local form = rnd() < 0.9 and "kp%06d" or pick(ID_FORMS)
    for i = 1, n do ids[i] = form:format(rnd(0, 999) * 1000 + i) end
    local odd = rnd() < 0.6 and pick { 0.01, 0.03, 0.1, 0.3 } or 0 -- the share of odd items
    local items = {}
    for i = 1, n do items[i] = item(ids[i], rnd() < odd) end
    local r = rnd()
    if r < 0.04 then table.remove(items, rnd(#items))
    elseif r < 0.08 then items[#items + 1] = item(ids[rnd(n)], false)
    elseif r < 0.12 and n > 1 then local a, b = rnd(n), rnd(n); items[a], items[b] = items[b], items[a]
    elseif r < 0.14 then items = {} end
    local results = "[" .. ws() .. table.concat(items, "," .. ws()) .. ws() .. "]"
    r = rnd()
    if r < 0.02 then results = pick { "null", '"none"', "{}", "5", '{"1":' .. (items[1] or "{}") .. "}" } end
    local data = { { "cmd_results", results } }
    if rnd() < 0.05 then data[#data + 1] = { "count", tostring(n) } end
    if rnd() < 0.02 then data[#data + 1] = { "cmd_results", pick { "null", "[]", results } } end
    if rnd() < 0.02 then data[#data + 1] = { "error_code", pick { '"0"', '"CPS.0001"', "0", "null" } } end
    local env = { { "error_code", pick { '"0"', '"0"', '"0"', "0", "null", '""', '"KOOPHONE.API.9999"' } },
                  { "error_msg", pick { '"ok"', '"ok"', "null", '"failed"' } },
                  { "data", object(data) } }
    if rnd() < 0.02 then env[3] = nil end
    if rnd() < 0.02 then env[#env + 1] = { "data", pick { "null", "{}", object { { "cmd_results", "[]" } } } } end
    if rnd() < 0.02 then env[#env + 1] = { "errorCode", '"0"' } end
    local text = ws() .. object(env) .. ws()
    r = rnd()
    if r < 0.03 then text = text:sub(1, rnd(0, #text)) -- truncated
    elseif r < 0.05 then
      local i = rnd(#text)
      text = text:sub(1, i - 1) .. pick { ",", "]", "}", '"', "\\", ":", "\0", "x", "{" } .. text:sub(i + 1)
    elseif r < 0.06 then text = text .. pick { "x", ",", "\0", " {}" } end
    local res = { request_id = rnd() < 0.95 and "req-" .. rnd(1000) or nil, attempts = rnd() < 0.95 and rnd(1, 3) or nil,
                  elapsed = rnd() < 0.95 and rnd() or nil }
    return text, ids, res
  end
end

-- ---------------------------------------------------------------- comparison

local function fail(what, text, ids, a, b)
  error(("sync_replies: %s\n  reply %q\n  ids %s\n  direct    %s\n  reference %s"):format(
    what, text:sub(1, 600), show(ids), show(a), show(b)), 0)
end

-- the rows Client:sync_command built from a decoded body before the direct path
local function reference_rows(ids, results, res)
  local out = core.item_rows(ids, results, "instance_id", res.request_id, res.attempts, res.elapsed)
  if not out then out = rows.from_results(ids, results, res) end
  out.request_id, out.attempts = res.request_id, res.attempts
  return out
end
M.reference_rows = reference_rows

--- Decodes `text` both ways and raises on any difference: where the direct
-- path built rows, they (completed by rows.finish) must be the
-- reference rows, and the rest of the body cjson's; where it decoded the
-- items, the body must be cjson's; where it gave up, the engine hands the
-- text to cjson (today's path).
-- @treturn string "rows", "items" or "gave_up"
function M.compare(text, ids, res)
  local body, direct = core.sync_reply(text, ids)
  if body == nil then return "gave_up" end
  local ok, want = pcall(ref.decode, text)
  if not ok then fail("the fast path took a reply cjson refuses: " .. tostring(want), text, ids, body, nil) end
  if not direct then
    if not same(body, want) then fail("bodies differ", text, ids, body, want) end
    return "items"
  end
  local data, want_data = body.data, type(want) == "table" and want.data
  if type(data) ~= "table" or data.cmd_results ~= direct or type(want_data) ~= "table"
      or type(want_data.cmd_results) ~= "table" then
    fail("rows that are not the reply's data.cmd_results", text, ids, body, want)
  end
  data.cmd_results = want_data.cmd_results
  local rest_same = same(body, want)
  data.cmd_results = direct
  if not rest_same then fail("bodies differ besides the rows", text, ids, body, want) end
  rows.finish(direct, res)
  local expect = reference_rows(ids, want_data.cmd_results, res)
  if not same(direct, expect) then fail("rows differ", text, ids, direct, expect) end
  return "rows"
end

return M
