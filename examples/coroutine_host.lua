-- A host that offers nothing but coroutine.yield (a game engine's script
-- slot, a scripted NPC...): the script is a coroutine resumed once per
-- frame, and must give the frame back quickly. koophone calls inside it go
-- through `frames(fn, ...)`: fn runs as a koophone-managed coroutine whose
-- waits yield to a private koophone.loop, stepped once per frame with
-- loop:step() -- so a koophone call "takes" several frames but never blocks one.
--   KOOPHONE_TOKEN=... [KOOPHONE_ENDPOINT=...] lua5.4 examples/coroutine_host.lua [n]
local koophone = require "koophone"
local sched = require "koophone.sched"
local batch = require "koophone.batch"

local n = tonumber(arg and arg[1]) or 1000

-- ---- script side: knows koophone, only ever coroutine.yield()s to the host
-- (koophone.sched.frames: koophone's waits yield to a private loop
-- stepped once per frame)
local frames = sched.frames

local function script(log)
  local client = assert(koophone.new())
  -- 1. one call: sync-command, a few frames
  local rows = assert(frames(client.sync_command, client, "getprop ro.build.version.release", { "kp000001" }))
  log(("sync: %s %s %s"):format(rows[1].id, rows[1].status, rows[1].output))
  -- 2. a task followed by polling once per frame (poll never blocks)
  local task = assert(frames(client.async_command, client, "echo hi", { "kp000002", "kp000003" }))
  local done, trows = task:poll()
  while not done do
    coroutine.yield("poll")
    done, trows = task:poll()
  end
  log(("task: %d rows, first %s %s"):format(#trows, trows[1].id, trows[1].status))
  -- 3. a whole batch, many frames
  local ids = {}
  for i = 0, n - 1 do ids[#ids + 1] = ("kp%06d"):format(i) end
  local report = assert(frames(batch.run, client, "echo hi", ids, { concurrency = 16 }))
  log(("batch: %d ids, %d ok"):format(report.summary.total, report.summary.ok))
  return report.summary.ok
end

-- ---- host side: knows nothing of koophone; resumes the script each frame
local FRAME = 1 / 60
local clock = require("koophone.core") -- the host's clock and "vsync"
local vsync = clock.engine()            -- (an idle engine's wait is just a sleep)
local co = coroutine.create(script)
local frames_run, worst, result = 0, 0, nil
local next_frame = clock.now()
while coroutine.status(co) ~= "dead" do
  local t0 = clock.now()
  local ok, res = coroutine.resume(co, print)
  if not ok then error(debug.traceback(co, res), 0) end
  if coroutine.status(co) == "dead" then result = res end
  local work = clock.now() - t0
  if work > worst then worst = work end
  frames_run = frames_run + 1
  next_frame = next_frame + FRAME
  local left = next_frame - clock.now()
  if left > 0 then vsync:wait(left * 1000) else next_frame = clock.now() end
end
print(("coroutine host: %d frames, worst script slice %.2f ms (budget %.1f ms), %s ok")
  :format(frames_run, worst * 1000, FRAME * 1000, tostring(result)))
