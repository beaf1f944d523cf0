-- bench/curl_w1.lua: the curl anchor of W1, shared by bench/run.lua and
-- bench/w1.lua so that both measure curl on the same requests.
local M = {}

--- Writes (once) a `curl -K` config with the W1 sweep: sync-command on
-- instances kp000000.. in chunks of 32, `rounds` times, against `url`;
-- returns its path (in directory `dir`).
function M.config(dir, url, n, rounds)
  local path = ("%s/curl-%d-%d.cfg"):format(dir, n, rounds)
  local existing = io.open(path)
  if existing then existing:close() return path end
  local f = assert(io.open(path, "w"))
  local k = 0
  for _ = 1, rounds do
    for first = 0, n - 1, 32 do
      local ids = {}
      for i = first, math.min(first + 32, n) - 1 do ids[#ids + 1] = ('\\"kp%06d\\"'):format(i) end
      k = k + 1
      if k > 1 then f:write("next\n") end
      f:write('url = "', url, '/v1/instances/sync-command"\n',
        'header = "X-Auth-Token: emulator-token"\nheader = "Content-Type: application/json"\n',
        'header = "Accept: application/json"\n', ('header = "x-request-id: curl-%08d"\n'):format(k),
        'data = "{\\"command\\":\\"getprop ro.build.version.release\\",\\"instance_ids\\":[',
        table.concat(ids, ","), ']}"\n', 'output = "/dev/null"\n', 'write-out = "%{http_code}\\n"\n')
    end
  end
  f:close()
  return path
end

return M
