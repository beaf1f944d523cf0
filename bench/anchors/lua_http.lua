-- lua-http on cqueues (Lua 5.3): CONC coroutines, each with its own
-- keep-alive HTTP/1.1 connection, pulling requests from a shared queue.
-- lua5.3 bench/anchors/lua_http.lua URL N ROUNDS CONC
package.path = "bench/anchors/?.lua;" .. package.path
-- Debian packages lpeg_patterns (pure Lua, needed by lua-http) for 5.1 only
package.path = package.path .. ";/usr/share/lua/5.1/?.lua"
local cqueues = require "cqueues"
local client = require "http.client"
local new_headers = require "http.headers".new
local cjson = require "cjson"
local C = require "common"
local url, n, rounds, conc = arg[1], tonumber(arg[2]), tonumber(arg[3]), tonumber(arg[4] or 64)
local host, port = url:match("^http://([^:/]+):(%d+)")
local bodies = C.bodies(n, rounds)
local ok, errs, next_i = 0, 0, 0
local cq = cqueues.new()
for _ = 1, math.min(conc, #bodies) do
  cq:wrap(function()
    local conn = assert(client.connect { host = host, port = tonumber(port), version = 1.1 })
    while true do
      next_i = next_i + 1
      local i = next_i
      local body = bodies[i]
      if not body then break end
      local h = new_headers()
      h:append(":method", "POST")
      h:append(":scheme", "http")
      h:append(":authority", host .. ":" .. port)
      h:append(":path", C.PATH)
      h:append("x-auth-token", C.TOKEN)
      h:append("content-type", "application/json")
      h:append("accept", "application/json")
      h:append("x-request-id", ("luahttp-%08d"):format(i))
      h:append("content-length", tostring(#body))
      local stream = assert(conn:new_stream())
      assert(stream:write_headers(h, false))
      assert(stream:write_chunk(body, true))
      local rh = assert(stream:get_headers())
      local text = assert(stream:get_body_as_string())
      if rh:get(":status") == "200" then
        local dok, t = pcall(cjson.decode, text)
        if dok and C.good(t) then ok = ok + 1 end
      end
      stream:shutdown()
    end
    conn:close()
  end)
end
local t0 = cqueues.monotime()
while not cq:empty() do
  local fine, err = cq:step()
  if not fine then errs = errs + 1; if errs <= 3 then io.stderr:write("lua-http: ", tostring(err), "\n") end end
end
C.emit(cjson, { requests = #bodies, ok = ok, wall = cqueues.monotime() - t0, errors = errs })
