-- bench/rows_check.lua [count] [seed]: the C rows of Client:sync_command's
-- usual reply against the Lua path they stand in for, differentially.
--
-- 1. core.item_rows (rows from decoded items) against rows.from_results
--    (rows.from_item over a by-id map), on generated item lists: items in
--    order or not, missing, duplicated, of every type; status 2, -1, 2.0,
--    "2", 0, 1, 3, null; text fields as strings, "", null, numbers,
--    booleans, tables; metatables. Where item_rows builds rows they must
--    equal the Lua path's; where it gives up (nil) the Lua path runs.
-- 2. core.sync_reply (rows built straight from the reply's bytes, as the
--    engine does for sync-command: src/cmd_rows.c) against cjson's decode
--    followed by (1), on generated reply bodies: keys in any order,
--    whitespace, escapes, unicode, duplicate keys, extra keys and items,
--    missing and reordered items, wrong types, numbers as strings, broken
--    JSON (bench/sync_replies.lua).
-- Exit 1 on the first difference.
--
--   LUA_PATH="lua/?.lua;./?.lua;;" LUA_CPATH="build/lua5.4/?.so;;" lua5.4 bench/rows_check.lua 100000
local core = require "koophone.core"
local rows = require "koophone.rows"

local COUNT = tonumber(arg[1]) or 100000
local SEED = tonumber(arg[2]) or os.time()
math.randomseed(SEED)
local rnd = math.random
local null = core.null

-- the Lua path, as Client:sync_command runs it when item_rows gives up
local lua_rows = rows.from_results

local function same(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) == "number" and math.type then return math.type(a) == math.type(b) and a == b end
  if type(a) ~= "table" then return a == b end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

local function pick(t) return t[rnd(#t)] end
local TEXTS = { "12", "", "", "ok", "hello world", null, nil, 5, 2.5, true, {}, "0", "中文" }
local STATUSES = { 2, 2, 2.0, -1, -1.0, "2", 0, 1, 3, null, nil, 2.5, "x" }

local function item_for(id)
  local r = rnd()
  if r < 0.02 then return pick { "x", 5, true, null } end
  local it = { status = pick(STATUSES), execute_msg = pick(TEXTS), error_code = pick(TEXTS),
               error_msg = pick(TEXTS), job_id = rnd() < 0.2 and pick(TEXTS) or nil, instance_id = id }
  if rnd() < 0.03 then it.instance_id = pick { 5, id .. "x", null, nil } end
  if rnd() < 0.01 then setmetatable(it, {}) end
  return it
end

local function case()
  local n = rnd(1, 32)
  local ids = {}
  for i = 1, n do ids[i] = rnd() < 0.05 and tostring(i) or ("kp%06d"):format(i) end
  local plain = rnd() < 0.5
  local results = {}
  for i = 1, n do results[i] = plain and { status = 2.0, execute_msg = "12", error_code = "", error_msg = "",
                                           instance_id = ids[i] } or item_for(ids[i]) end
  local r = rnd()
  if r < 0.05 then table.remove(results, rnd(#results))
  elseif r < 0.1 then results[#results + 1] = item_for(ids[rnd(n)])
  elseif r < 0.15 and n > 1 then local a, b = rnd(n), rnd(n); results[a], results[b] = results[b], results[a]
  elseif r < 0.17 then results[rnd(n)] = { status = 2, instance_id = tonumber(ids[1]) or 7 } end
  local res = { request_id = rnd() < 0.9 and "req-1" or nil, attempts = rnd() < 0.9 and rnd(1, 3) or nil,
                elapsed = rnd() < 0.9 and rnd() or nil }
  return ids, results, res
end

local built, gave_up = 0, 0
for _ = 1, COUNT do
  local ids, results, res = case()
  local c = core.item_rows(ids, results, "instance_id", res.request_id, res.attempts, res.elapsed)
  if c then
    built = built + 1
    local l = lua_rows(ids, results, res)
    if #c ~= #l or not same(c, l) then
      io.stderr:write(("rows_check: difference (seed %d)\n"):format(SEED))
      for i = 1, math.max(#c, #l) do
        if not same(c[i], l[i]) then
          for k, v in pairs(l[i] or {}) do io.stderr:write("  lua ", k, "=", tostring(v), "\n") end
          for k, v in pairs(c[i] or {}) do io.stderr:write("  c   ", k, "=", tostring(v), "\n") end
          break
        end
      end
      os.exit(1)
    end
  else
    gave_up = gave_up + 1
  end
end
print(("rows_check: %d item lists (seed %d): item_rows built %d, the same as the Lua path each time; gave up on %d")
  :format(COUNT, SEED, built, gave_up))

local replies = require "bench.sync_replies"
local gen = replies.generator(SEED)
local seen = { rows = 0, items = 0, gave_up = 0 }
for _ = 1, COUNT do
  local text, ids, res = gen()
  local ok, how = pcall(replies.compare, text, ids, res)
  if not ok then
    io.stderr:write(("rows_check: difference (seed %d)\n%s\n"):format(SEED, how))
    os.exit(1)
  end
  seen[how] = seen[how] + 1
end
print(("rows_check: %d reply bodies (seed %d): rows straight from the bytes %d, the same as cjson + the rows above " ..
  "each time; items decoded %d, the same as cjson; fast path gave up %d"):format(COUNT, SEED, seen.rows, seen.items,
  seen.gave_up))
