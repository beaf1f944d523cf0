-- LuaSocket (socket.http) + lua-cjson, one request after another (what a
-- plain Lua script does). socket.http opens a connection per request.
-- lua5.4 bench/anchors/luasocket.lua URL N ROUNDS
package.path = "bench/anchors/?.lua;" .. package.path
local http = require "socket.http"
local ltn12 = require "ltn12"
local socket = require "socket"
local cjson = require "cjson"
local C = require "common"
local url, n, rounds = arg[1], tonumber(arg[2]), tonumber(arg[3])
local bodies = C.bodies(n, rounds)
local ok = 0
local t0 = socket.gettime()
for i, body in ipairs(bodies) do
  local out = {}
  local _, code = http.request {
    url = url .. C.PATH, method = "POST", sink = ltn12.sink.table(out), source = ltn12.source.string(body),
    headers = { ["X-Auth-Token"] = C.TOKEN, ["Content-Type"] = "application/json", ["Accept"] = "application/json",
                ["x-request-id"] = ("luasocket-%08d"):format(i), ["Content-Length"] = tostring(#body) },
  }
  if code == 200 then
    local dok, t = pcall(cjson.decode, table.concat(out))
    if dok and C.good(t) then ok = ok + 1 end
  end
end
C.emit(cjson, { requests = #bodies, ok = ok, wall = socket.gettime() - t0 })
