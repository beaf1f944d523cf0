-- bench/json_check.lua [count] [seed]: the core's JSON fast path against
-- lua-cjson, differentially. Every input is decoded twice: by
-- core.json_decode (the engine's path: the fast path, else the private cjson
-- instance) and by a cjson.new() configured as src/json.c configures its own.
-- Results must be the same values (numbers with their Lua subtype and the
-- sign of zero, null as the NULL lightuserdata) or the same error message.
-- Inputs: generated documents (keys, duplicates, nesting, every escape,
-- surrogates, control bytes, UTF-8, numbers of every form, odd whitespace),
-- the fuzz corpus, and their textual mutations (truncation, byte flips and
-- insertions, NULs). Then the encoder: core.json_encode against
-- cjson.encode on generated Lua values (see the end). Exit 1 on the first
-- difference, printed as %q.
--
--   LUA_PATH="lua/?.lua;;" LUA_CPATH="build/lua5.4/?.so;;" lua5.4 bench/json_check.lua 200000
local core = require "koophone.core"
local cjson = require "cjson"

local COUNT = tonumber(arg[1]) or 100000
local SEED = tonumber(arg[2]) or os.time()
math.randomseed(SEED)
local rnd = math.random

local ref = cjson.new()
ref.decode_max_depth(64)
ref.decode_invalid_numbers(false)
ref.encode_max_depth(64)
ref.encode_invalid_numbers(false)

local function same(a, b, seen)
  if type(a) ~= type(b) then return false end
  if type(a) == "number" then
    if math.type and math.type(a) ~= math.type(b) then return false end
    if a ~= a then return b ~= b end
    return a == b and (a ~= 0 or 1 / a == 1 / b)
  end
  if type(a) ~= "table" then return a == b end
  seen = seen or {}
  if seen[a] then return seen[a] == b end
  seen[a] = b
  if getmetatable(a) ~= getmetatable(b) then return false end
  for k, v in pairs(a) do
    if not same(v, b[k], seen) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

-- ---------------------------------------------------------------- generation
local WS = { "", "", "", "", " ", "\n", "\r\n", "\t", "  ", " \t\n ", "\v", "\f", "\0" }
local function ws() if rnd() < 0.8 then return "" end return WS[rnd(#WS)] end

local KEYS = { "error_code", "error_msg", "data", "cmd_results", "status", "execute_msg", "instance_id",
               "job_id", "task_id", "", "a", "b", "jobs", "request_id", "count" }
local ESC = { '\\"', "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\u0041", "\\u00e9", "\\u4e2d",
              "\\u0000", "\\uFFFF", "\\ud83d\\ude00", "\\ud800", "\\udc00", "\\ud800x", "\\u12", "\\u12g4",
              "\\x", "\\'", "\\", "\\U0041", "\\u007f", "\\u0080", "\\u07ff", "\\u0800" }
local function str_body()
  local parts = {}
  for _ = 1, rnd(0, 6) do
    local r = rnd()
    if r < 0.45 then
      local s = {}
      for _ = 1, rnd(0, 12) do s[#s + 1] = string.char(rnd(0x61, 0x7a)) end
      parts[#parts + 1] = table.concat(s)
    elseif r < 0.7 then parts[#parts + 1] = ESC[rnd(#ESC)]
    elseif r < 0.8 then parts[#parts + 1] = "中文é"
    elseif r < 0.87 then parts[#parts + 1] = string.char(rnd(0, 31))
    elseif r < 0.92 then parts[#parts + 1] = string.char(rnd(0x80, 0xff))
    elseif r < 0.96 then parts[#parts + 1] = "kp" .. ("%06d"):format(rnd(0, 999999))
    else parts[#parts + 1] = string.rep("x", rnd(20, 60)) end
  end
  return table.concat(parts)
end
local function str() return '"' .. str_body() .. '"' end

local NUMS = { "0", "-0", "1", "2", "-1", "12", "007", "-007", "0.5", "1.5", "-1.25", "1e3", "1E3", "1e+3", "1e-3",
               "123456789012345", "1234567890123456", "12345678901234567890", "-123456789012345",
               "9007199254740993", "1.", ".5", "-", "+1", "0x10", "1e", "1e999", "-1e999", "NaN", "Infinity",
               "-Infinity", "inf", "nan", "0.0", "-0.0", "1.0e0", "2.50", "00", "01.5", "1.5.3", "1-2" }
local function num()
  if rnd() < 0.6 then return tostring(rnd(-1000000, 1000000)) end
  return NUMS[rnd(#NUMS)]
end

local gen
local function obj(depth)
  local n = rnd(0, 7)
  local parts = {}
  for _ = 1, n do
    local k = rnd() < 0.8 and ('"' .. KEYS[rnd(#KEYS)] .. '"') or str()
    parts[#parts + 1] = ws() .. k .. ws() .. ":" .. gen(depth + 1) .. ws()
  end
  return "{" .. ws() .. table.concat(parts, ",") .. "}"
end
local function arr(depth)
  local big = rnd() < 0.03
  local n = big and rnd(100, 3000) or rnd(0, 8)
  local parts = {}
  for i = 1, n do parts[i] = big and (rnd() < 0.5 and num() or str()) or gen(depth + 1) end
  return "[" .. ws() .. table.concat(parts, ",") .. ws() .. "]"
end
local LIT = { "true", "false", "null", "tru", "nul", "True", "NULL", "falsey" }
function gen(depth)
  local r = rnd()
  local v
  if depth > 4 and r < 0.3 then r = 0.7 end
  if r < 0.2 then v = obj(depth)
  elseif r < 0.3 then v = arr(depth)
  elseif r < 0.6 then v = str()
  elseif r < 0.85 then v = num()
  else v = LIT[rnd(#LIT)] end
  return ws() .. v .. ws()
end

local function deep(n, open, close, inner)
  return string.rep(open, n) .. inner .. string.rep(close, n)
end

local function mutate(s)
  local r = rnd()
  if #s == 0 then return s end
  if r < 0.25 then return s:sub(1, rnd(0, #s)) end
  if r < 0.5 then
    local i = rnd(#s)
    return s:sub(1, i - 1) .. string.char(rnd(0, 255)) .. s:sub(i + 1)
  end
  if r < 0.7 then
    local i = rnd(#s + 1)
    local ins = ({ ",", "]", "}", '"', "\\", ":", "\0", " ", "[", "{", "1", "e" })[rnd(12)]
    return s:sub(1, i - 1) .. ins .. s:sub(i)
  end
  if r < 0.8 then return s .. ({ "\0", " x", ",", "\0garbage", "\n" })[rnd(5)] end
  local i = rnd(#s)
  return s:sub(1, i - 1) .. s:sub(i + 1)
end

-- ---------------------------------------------------------------- corpus
local corpus = {}
do
  local p = io.popen("ls fuzz/corpus/*.json 2>/dev/null")
  for path in p:lines() do
    local f = io.open(path, "rb")
    corpus[#corpus + 1] = f:read("*a")
    f:close()
  end
  p:close()
end
local FIXED = { "", " ", "{}", "[]", "[[]]", '{"a":{}}', "null", "true", '"x"', "1", "-0", '{"a":1,"a":2}',
                '{"a":1,"a":null}', '["a","a","a"]', "\xff\xfe{}", "\0{}", "{}\0", "[1,]", "{,}", '{"a"}',
                deep(31, "[", "]", "1"), deep(32, "[", "]", "1"), deep(33, "[", "]", "1"), deep(64, "[", "]", "1"),
                deep(65, "[", "]", "1"), deep(40, '{"a":', "}", "1"), '"\\ud83d\\ude00"', '"\\u0000"',
                string.rep("[", 2000), '{"k":"' .. string.rep("v", 100000) .. '"}' }

-- ---------------------------------------------------------------- run
local fast, slow, fail_same = 0, 0, 0
local function check(s)
  local a, aerr = core.json_decode(s)
  local okb, b = pcall(ref.decode, s)
  if core.json_decode(s, true) ~= nil then fast = fast + 1 else slow = slow + 1 end
  local good
  if okb then good = a ~= nil and same(a, b) and same(b, a)
  else
    good = a == nil and aerr == b
    if good then fail_same = fail_same + 1 end
  end
  if not good then
    io.stderr:write(("json_check: difference (seed %d) on input %q\n  core: %s %s\n  cjson: %s %s\n"):format(
      SEED, s:sub(1, 400), tostring(a), tostring(aerr), tostring(okb), tostring(b)))
    os.exit(1)
  end
end

for _, s in ipairs(FIXED) do check(s) end
for _, s in ipairs(corpus) do check(s); for _ = 1, 20 do check(mutate(s)) end end
for i = 1, COUNT do
  local s = gen(0)
  if i % 3 == 0 then s = mutate(s) end
  check(s)
end
print(("json_check: %d inputs (seed %d): the same as cjson every time; fast path took %d, cjson %d (%d errors, same messages)")
  :format(fast + slow, SEED, fast, slow, fail_same))

-- ---------------------------------------------------------------- encoding
-- core.json_encode (the engine's path for a request's json: src/encode.c,
-- else the private cjson) against cjson.encode, on generated Lua values:
-- request bodies, lists dense and sparse, empty tables, mixed keys, every
-- byte in strings and keys, numbers, booleans, null, metatables, nesting.
local null = cjson.null
local function byte_string()
  local t = {}
  for i = 1, rnd(0, 12) do
    local r = rnd()
    if r < 0.6 then t[i] = string.char(rnd(0x61, 0x7a))
    elseif r < 0.8 then t[i] = string.char(rnd(0, 255))
    else t[i] = ({ '"', "\\", "/", "\n", "\0", "\127", "中", "é", " " })[rnd(9)] end
  end
  return table.concat(t)
end
local gen_value
local function gen_table(depth)
  local t, r = {}, rnd()
  if r < 0.4 then -- a list
    for i = 1, rnd(0, 8) do t[i] = gen_value(depth + 1) end
    if rnd() < 0.1 then t[rnd(1, 20)] = gen_value(depth + 1) end -- maybe sparse
  elseif r < 0.9 then
    for _ = 1, rnd(0, 6) do t[rnd() < 0.7 and byte_string() or ("k" .. rnd(5))] = gen_value(depth + 1) end
    if rnd() < 0.05 then t[rnd(1, 3)] = "n" end -- mixed keys
    if rnd() < 0.03 then t[1.5] = "f" end
  else
    t = { command = byte_string(), instance_ids = {} }
    for i = 1, rnd(1, 32) do t.instance_ids[i] = ("kp%06d"):format(rnd(0, 999999)) end
  end
  if rnd() < 0.02 then setmetatable(t, {}) end
  return t
end
function gen_value(depth)
  local r = rnd()
  if depth > 3 and r < 0.5 then r = 0.9 end
  if depth > 20 then return "deep" end
  if r < 0.35 then return gen_table(depth) end
  if r < 0.8 then return byte_string() end
  if r < 0.85 then return rnd() < 0.5 end
  if r < 0.9 then return ({ 0, -1, 1.5, 1e300, 2^53, -0.0, 12345, 0 / 0, math.huge })[rnd(9)] end
  if r < 0.95 then return null end
  return ({ print, io.stdout })[rnd(2)]
end
local function nested(n, inner)
  local t = inner
  for _ = 1, n do t = { t } end
  return t
end
local enc_fast, enc_slow, enc_err = 0, 0, 0
local function check_encode(v)
  local a, aerr = core.json_encode(v)
  local okb, b = pcall(ref.encode, v)
  if core.json_encode(v, true) ~= nil then enc_fast = enc_fast + 1 else enc_slow = enc_slow + 1 end
  local good = (okb and a == b) or (not okb and a == nil and aerr == b)
  if not okb and good then enc_err = enc_err + 1 end
  if not good then
    io.stderr:write(("json_check: encoding differs (seed %d)\n  core: %q %s\n  cjson: %s %q\n"):format(
      SEED, tostring(a), tostring(aerr), tostring(okb), tostring(b)))
    os.exit(1)
  end
end
for _, v in ipairs { {}, { {} }, { a = {} }, { 1, 2 }, { "a", nil, "b" }, nested(15, "x"), nested(16, "x"),
                     nested(64, "x"), nested(65, "x"), { [1] = "a", [3] = "b" }, { [1] = "a", [30] = "b" },
                     { command = "ls -l /system", instance_ids = { "kp000001", "a44uhlf7" } } } do
  check_encode(v)
end
for _ = 1, COUNT do check_encode(gen_value(0)) end
print(("json_check: %d values encoded (seed %d): the same as cjson every time; fast path took %d, cjson %d " ..
  "(%d errors, same messages)"):format(enc_fast + enc_slow, SEED, enc_fast, enc_slow, enc_err))
