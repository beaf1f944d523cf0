--- An adaptive send rate for living under the vendor gateway's throttling.
--
-- The gateway limits each user (429 `APIGW.0308` "policy user over
-- ratelimit,limit:200,time:5 minute"); the limit is not announced, so the
-- client learns it as the AWS SDKs' "adaptive" retry mode does: a token
-- bucket whose fill rate follows CUBIC —
--
-- * off (no pacing at all) until the first 429;
-- * a 429 cuts the rate multiplicatively (× `beta` = 0.7) and, with a
--   `Retry-After`, holds every request until then (the user's budget is
--   spent: anything sent earlier would be refused too);
-- * each success raises it slowly along the cubic curve
--   `scale·(t − K)³ + W`, where W is the rate at the last cut and
--   K = ∛(W·(1 − beta)/scale): flat near W, probing beyond it only after a
--   while; never above twice the measured response rate (so an idle client
--   does not grow an unbounded allowance).
--
-- Two differences from the AWS limiter, both to waste fewer requests: the
-- rate at the first 429 is estimated from the successes since the first
-- request over the time up to the end of the `Retry-After` pause (the
-- answers of a burst say nothing about the sustainable rate), and the 429s
-- of requests sent before the last cut belong to that cut's episode — they
-- hold the pause but do not cut again (one decrease per episode, as TCP
-- makes one per round trip).
--
-- One limiter per client transport: every request goes through it, the
-- status queries of tasks as much as the submits (`koophone.transport`);
-- `koophone.batch` attaches one for its duration, or the client keeps one
-- with `koophone.new{adaptive_rate = true}`.
--
--     local lim = ratelimit.new()
--     local wait, ticket = lim:acquire(now) -- 0: send now; else wait, then
--     -- send if ticket and lim:valid(ticket), else acquire again
--     lim:response(now, sent_at, status == 429, retry_after)
-- @module koophone.ratelimit
local M = {}

--- The multiplicative cut on a throttle.
M.BETA = 0.7
--- The cubic's scale (requests/s per s³).
M.SCALE = 0.4
--- The lowest rate ever used (requests per second).
M.MIN_RATE = 0.5
--- The longest `Retry-After` honoured (seconds).
M.MAX_PAUSE = 300
--- Seconds' worth of turns that may be saved up and sent at once.
M.BURST = 0.25
--- Seconds without an answer after which the first estimate starts afresh.
M.IDLE = 5
--- The measuring bucket of the response rate (seconds).
M.MEASURE_BUCKET = 0.5
--- The weight of the newest bucket in the smoothed response rate.
M.SMOOTH = 0.8

local Limiter = {}
Limiter.__index = Limiter

--- A new limiter, off until its first throttle.
-- @tparam[opt] table opts `min_rate` (requests/s, default 0.5), `max_pause`
--   (seconds, default 300)
-- @treturn table limiter
function M.new(opts)
  opts = opts or {}
  return setmetatable({
    enabled = false, rate = nil, next_slot = 0, pause_until = 0, epoch = 0,
    min_rate = opts.min_rate or M.MIN_RATE, max_pause = opts.max_pause or M.MAX_PAUSE,
    measured = 0, count = 0, bucket = nil,            -- the response rate
    first = nil, ok_since = 0, seen = nil,            -- for the first estimate
    last_max = 0, last_cut = nil, k = 0,              -- the cubic
    throttled = 0, cuts = 0,                          -- for reports
  }, Limiter)
end

function Limiter:_set_rate(r)
  if r < self.min_rate then r = self.min_rate end
  self.rate = r
end

-- The response rate, in buckets of MEASURE_BUCKET seconds, smoothed.
function Limiter:_measure(now)
  local b = math.floor(now / M.MEASURE_BUCKET) * M.MEASURE_BUCKET
  self.count = self.count + 1
  if not self.bucket then self.bucket = b return end
  if b > self.bucket then
    local current = self.count / (b - self.bucket)
    self.measured = current * M.SMOOTH + self.measured * (1 - M.SMOOTH)
    self.count, self.bucket = 0, b
  end
end

--- Asks for a turn to send. Turns are handed out in order, `1/rate` apart
-- (a bucket of `BURST` seconds' worth may go at once), so many waiting
-- senders never wake together to fight over one token.
-- @tparam number now `sched.now()`
-- @treturn number 0: send now; else seconds to wait
-- @return a ticket when the wait is a reserved turn: after the wait, send
--   if `valid(ticket)`, else ask again; nil: ask again after the wait
function Limiter:acquire(now)
  if now < self.pause_until then return self.pause_until - now, nil end
  if not self.first then
    self.first = now
  elseif not self.enabled and self.seen and now - self.seen > M.IDLE then
    self.first, self.ok_since = now, 0 -- an idle spell says nothing about the rate
  end
  if not self.enabled then return 0 end
  local gap = 1 / self.rate
  local earliest = now - math.max(0, M.BURST * self.rate - 1) * gap -- saved-up turns, at most BURST s
  local slot = self.next_slot
  if slot < earliest then slot = earliest end
  self.next_slot = slot + gap
  if slot <= now then return 0 end
  return slot - now, self.epoch
end

--- True when a turn reserved by `acquire` still holds: no 429 came since
-- (and, given `now`, no pause holds).
-- @param ticket
-- @tparam[opt] number now
-- @treturn boolean
function Limiter:valid(ticket, now)
  return ticket == self.epoch and not (now and now < self.pause_until)
end

--- Learns from one answer (any HTTP status; transport failures say
-- nothing about the rate and are not reported).
-- @tparam number now
-- @tparam number sent_at when the request was sent (`sched.now()`)
-- @tparam boolean throttled the answer was a 429
-- @tparam[opt] number retry_after the answer's `Retry-After` (seconds)
function Limiter:response(now, sent_at, throttled, retry_after)
  self:_measure(now)
  self.seen = now
  if not throttled then
    self.ok_since = self.ok_since + 1
    if self.enabled then
      local t = now - self.last_cut - self.k
      local r = M.SCALE * t * t * t + self.last_max
      local cap = 2 * self.measured
      if cap > 0 and r > cap then r = cap end
      if r > self.rate then self:_set_rate(r) end
    end
    return
  end
  self.throttled = self.throttled + 1
  local pause = tonumber(retry_after) or 0
  if pause ~= pause or pause < 0 then pause = 0 end
  if pause > self.max_pause then pause = self.max_pause end
  if now + pause > self.pause_until then self.pause_until = now + pause end
  -- sent before the last cut: the same episode, already paid for
  if self.last_cut and sent_at and sent_at < self.last_cut then return end
  local est
  if self.enabled then
    est = self.rate
    if self.measured > 0 and self.measured < est then est = self.measured end
  else
    est = self.ok_since / math.max(M.MEASURE_BUCKET, now + pause - (self.first or now))
  end
  if est < self.min_rate then est = self.min_rate end
  self.last_max = est
  self.k = (est * (1 - M.BETA) / M.SCALE) ^ (1 / 3)
  self.enabled = true
  self.cuts = self.cuts + 1
  self:_set_rate(est * M.BETA)
  -- turns already handed out are void; sending resumes at the new rate when
  -- the pause ends, and the cubic's clock starts then (a pause is not time
  -- spent probing)
  self.epoch = self.epoch + 1
  self.last_cut = math.max(now, self.pause_until)
  self.next_slot = self.last_cut
  self.ok_since = 0
end

--- The current send rate (requests/s), or nil while off.
-- @treturn ?number
function Limiter:current()
  return self.enabled and self.rate or nil
end

function Limiter:__tostring()
  return ("koophone.ratelimit (%s, %d throttled, %d cuts)"):format(
    self.enabled and ("%.1f req/s"):format(self.rate) or "off", self.throttled, self.cuts)
end

return M
