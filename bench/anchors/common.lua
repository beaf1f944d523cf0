-- bench/anchors/common.lua: the W1 requests every anchor sends (the same as
-- bench/kp.lua and the curl config): sweeps of sync-command over N
-- instances in chunks of 32, `rounds` times. Loads under Lua 5.1-5.4.
local M = {}
M.CMD = "getprop ro.build.version.release"
M.PATH = "/v1/instances/sync-command"
M.TOKEN = "emulator-token"

-- list of JSON bodies, in order
function M.bodies(n, rounds)
  local sweep = {}
  for first = 0, n - 1, 32 do
    local ids = {}
    for i = first, math.min(first + 32, n) - 1 do ids[#ids + 1] = ('"kp%06d"'):format(i) end
    sweep[#sweep + 1] = '{"command":"' .. M.CMD .. '","instance_ids":[' .. table.concat(ids, ",") .. ']}'
  end
  local out = {}
  for _ = 1, rounds do
    for i = 1, #sweep do out[#out + 1] = sweep[i] end
  end
  return out
end

-- true when a decoded reply is a success with one row per instance
function M.good(t)
  return type(t) == "table" and t.error_code == "0" and type(t.data) == "table"
    and type(t.data.cmd_results) == "table"
end

function M.emit(cjson, t)
  io.write("RESULT ", cjson.encode(t), "\n")
  io.stdout:flush()
end

return M
