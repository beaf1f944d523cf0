-- A 60 fps frame loop that drives a 1,000-instance rollout without ever
-- blocking a frame: submits run as koophone coroutines stepped once per
-- frame, tasks advance with the non-blocking task:poll(), and the idle rest
-- of each frame waits in the engine (so transfers move while we "vsync").
--   KOOPHONE_TOKEN=... [KOOPHONE_ENDPOINT=...] lua5.4 examples/game_loop.lua [n]
local koophone = require "koophone"
local loop = require "koophone.loop"

local client = assert(koophone.new())
local n = tonumber(arg and arg[1]) or 1000
local FRAME = 1 / 60

-- submits: 100 ids per async-command, run as coroutines of a loop that the
-- frame loop steps once per frame (loop:step() never blocks)
local submits = loop.new()
local tasks = {}
for first = 0, n - 1, 100 do
  submits:spawn(function()
    local ids = {}
    for i = first, math.min(n, first + 100) - 1 do ids[#ids + 1] = ("kp%06d"):format(i) end
    local task = assert(client:async_command("echo frame", ids))
    tasks[#tasks + 1] = task
  end)
end

local frames, worst, total_work = 0, 0, 0
local next_frame = koophone.now()
local submitted, done_ids, ok = false, 0, 0 -- luacheck: ignore 311
while true do
  local t0 = koophone.now()
  -- update: everything here is non-blocking
  client:step()                             -- advance every transfer
  if not submitted then submitted = submits:step() == 0 end
  done_ids, ok = 0, 0
  local all = submitted
  for _, task in ipairs(tasks) do
    local done, rows = task:poll()
    all = all and done
    for _, row in ipairs(rows) do
      if row.status ~= "running" then done_ids = done_ids + 1 end
      if row.status == "ok" then ok = ok + 1 end
    end
  end
  local work = koophone.now() - t0
  total_work = total_work + work
  if work > worst then worst = work end
  frames = frames + 1
  -- render: a progress line twice a second
  if frames % 30 == 0 or all then
    print(("frame %4d  %4d/%d done, %4d ok  (update %.2f ms)"):format(frames, done_ids, n, ok, work * 1000))
  end
  if all then break end
  -- wait for the next frame; transfers keep moving meanwhile
  next_frame = next_frame + FRAME
  local left = next_frame - koophone.now()
  if left > 0 then client.engine:wait(left * 1000) else next_frame = koophone.now() end
end
print(("game loop: %d instances, %d ok, %d frames, update mean %.2f ms, worst %.2f ms (budget %.1f ms)")
  :format(n, ok, frames, total_work / frames * 1000, worst * 1000, FRAME * 1000))
