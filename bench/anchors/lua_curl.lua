-- Debian lua-curl 0.3.0 (Lua 5.1/5.2): it binds only the easy interface (no
-- multi), so one request after another on one easy handle (keep-alive).
-- lua5.1 bench/anchors/lua_curl.lua URL N ROUNDS
package.path = "bench/anchors/?.lua;" .. package.path
local curl = require "curl"
local socket = require "socket"
local cjson = require "cjson"
local C = require "common"
local url, n, rounds = arg[1], tonumber(arg[2]), tonumber(arg[3])
local bodies = C.bodies(n, rounds)
local e = curl.easy_init()
e:setopt(curl.OPT_URL, url .. C.PATH)
local buf
e:setopt(curl.OPT_WRITEFUNCTION, function(s, len) buf[#buf + 1] = s return len end)
local ok = 0
local t0 = socket.gettime()
for i, body in ipairs(bodies) do
  buf = {}
  e:setopt(curl.OPT_HTTPHEADER, { "X-Auth-Token: " .. C.TOKEN, "Content-Type: application/json",
    "Accept: application/json", ("x-request-id: luacurl-%08d"):format(i) })
  e:setopt(curl.OPT_POSTFIELDS, body)
  local r = e:perform()
  if r == 0 then
    local dok, t = pcall(cjson.decode, table.concat(buf))
    if dok and C.good(t) then ok = ok + 1 end
  end
end
C.emit(cjson, { requests = #bodies, ok = ok, wall = socket.gettime() - t0 })
