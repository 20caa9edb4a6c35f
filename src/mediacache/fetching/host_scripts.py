"""The Lua scripts of the host limiter: every decision about a host is one atomic script on Redis.

Keys of one host, under the limiter's prefix P (all named in KEYS, so a hash-tagged prefix such as
`{bull}` keeps them in one cluster slot):

- `P:<host>:state` (hash): `tat` (GCRA theoretical arrival time, ms), `pause_until` (ms),
  `open_until` (ms; absent = breaker closed; in the past = half-open), `probe` (the permit id of the
  half-open probe), `line` (when the next waiter is told to come back, ms), `hold_ms` (average
  time a permit is held), `rate`/`rate_at` (grants per second, exponentially averaged), `limits`
  (the rule as last applied) and counters (`granted`, `waits_<reason>`, `failures_total`,
  `throttled_total`, `trips`).
- `P:<host>:permits` (sorted set): permit id -> expiry time (ms). Expired permits are dropped before
  every count, so a killed worker's permits come back within the permit TTL.
- `P:<host>:failures` (sorted set): failures of the breaker's sliding window, scored by time (ms).
- `P:recent` (sorted set): host -> last acquire (ms), trimmed to the most recent few hundred.

Every script reads the time with `redis.call('TIME')`: one clock for all workers, whatever their
own clocks say (scripts are replicated by their effects on Redis >= 5, so TIME is allowed).
Times are milliseconds as Lua doubles; replies are integers (Redis truncates Lua numbers).
"""

from __future__ import annotations

# Shared preamble: the server's time in ms, with microseconds as the fraction.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
"""

# KEYS: state, permits, recent.
# ARGV: permit id, host; interval ms (0 = no rate limit), burst tolerance ms, concurrency (0 = none),
#       limits text (the rule's); permit ttl ms, recent max, key ttl ms, probe poll ms,
#       default hold ms, rate average ms, max spread ms (the limiter's).
# Reply: {1, permit id, granted at ms, expires at ms, probe 0|1} or {0, wait ms, reason}.
ACQUIRE = _NOW + """
local id = ARGV[1]
local interval = tonumber(ARGV[3])
local tolerance = tonumber(ARGV[4])
local conc = tonumber(ARGV[5])
local limits = ARGV[6]
local ttl = tonumber(ARGV[7])
local key_ttl = tonumber(ARGV[9])
local probe_poll = tonumber(ARGV[10])
local default_hold = tonumber(ARGV[11])
local avg_ms = tonumber(ARGV[12])
local max_spread = tonumber(ARGV[13])

redis.call('ZADD', KEYS[3], now, ARGV[2])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[8]) + 1))
redis.call('PEXPIRE', KEYS[3], key_ttl)

local st = redis.call('HMGET', KEYS[1], 'tat', 'pause_until', 'open_until', 'probe', 'line', 'hold_ms',
                      'rate', 'rate_at')
local tat = tonumber(st[1]) or 0
local pause_until = tonumber(st[2]) or 0
local open_until = tonumber(st[3]) or 0
local hold = tonumber(st[6]) or default_hold

-- Waiters are told to come back one slot apart, not all at the same moment: a thousand jobs
-- waiting on one host would otherwise all return together, and all but a few be turned away
-- again. A slot is the rate's interval, or the time one permit takes to come free; after a
-- pause or an open breaker, the shorter of the two (whichever limit binds re-spreads them).
local conc_step = 0
if conc > 0 then conc_step = hold / conc end
local any_step = math.min(interval > 0 and interval or conc_step, conc_step > 0 and conc_step or interval)

-- The line is never more than max_spread ahead of the wait itself: it counts waiters that may
-- have gone (jobs removed, limits raised), and must not keep a new caller away for long.
local function wait(base_ms, reason, step)
  local at = now + base_ms
  at = math.max(at, math.min(tonumber(st[5]) or 0, at + max_spread))
  redis.call('HSET', KEYS[1], 'line', at + step)
  redis.call('HINCRBY', KEYS[1], 'waits_' .. reason, 1)
  redis.call('PEXPIRE', KEYS[1], key_ttl)
  return {0, math.max(1, math.ceil(at - now)), reason}
end

if pause_until > now then return wait(pause_until - now, 'paused', any_step) end

redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)

local probe = false
if open_until > 0 then
  if now < open_until then return wait(open_until - now, 'open', any_step) end
  -- Half-open: one probe at a time. A probe whose worker died stops counting when its permit
  -- expires (it was dropped just above), and the next caller becomes the probe.
  if st[4] and redis.call('ZSCORE', KEYS[2], st[4]) then return wait(probe_poll, 'open', any_step) end
  probe = true
end

-- Concurrency before rate: a caller turned away for concurrency must not use up a rate slot.
if conc > 0 then
  local held = redis.call('ZCARD', KEYS[2])
  if held >= conc then
    local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    -- The next release is expected within the average hold divided among the permits, and
    -- comes at the latest when the oldest permit expires.
    return wait(math.min(conc_step, tonumber(first[2]) - now), 'concurrency', conc_step)
  end
end

-- GCRA: conforming while the theoretical arrival time is at most `tolerance` ahead of now.
if interval > 0 then
  local at = math.max(tat, now)
  if at - now > tolerance then return wait(at - tolerance - now, 'rate', interval) end
  tat = at + interval
end

local expires = now + ttl
redis.call('ZADD', KEYS[2], expires, id)
local rate = (tonumber(st[7]) or 0) * math.exp(-(now - (tonumber(st[8]) or now)) / avg_ms) + 1000 / avg_ms
redis.call('HSET', KEYS[1], 'tat', tat, 'rate', rate, 'rate_at', now, 'limits', limits)
if probe then redis.call('HSET', KEYS[1], 'probe', id) end
redis.call('HINCRBY', KEYS[1], 'granted', 1)
redis.call('PEXPIRE', KEYS[1], key_ttl)
redis.call('PEXPIRE', KEYS[2], key_ttl)
return {1, id, math.floor(now), math.floor(expires), probe and 1 or 0}
"""

# KEYS: state, permits, failures.
# ARGV: permit id, outcome (ok|failure|throttled|abandoned), pause ms, granted at ms,
#       failure threshold, failure window ms, open ms, key ttl ms.
# Reply: {permit was still held 0|1, breaker event: '' | 'opened' | 'reopened' | 'closed' | 'paused'}.
RELEASE = _NOW + """
local id = ARGV[1]
local outcome = ARGV[2]
local key_ttl = tonumber(ARGV[8])
local held = redis.call('ZREM', KEYS[2], id)
local st = redis.call('HMGET', KEYS[1], 'open_until', 'probe', 'hold_ms', 'pause_until')
local open_until = tonumber(st[1]) or 0
local is_probe = st[2] == id
local event = ''

if outcome ~= 'abandoned' then
  local took = math.max(0, now - tonumber(ARGV[4]))
  local hold = tonumber(st[3])
  redis.call('HSET', KEYS[1], 'hold_ms', hold and (hold * 0.8 + took * 0.2) or took)
end

local function open(name)
  redis.call('HSET', KEYS[1], 'open_until', now + tonumber(ARGV[7]))
  redis.call('HDEL', KEYS[1], 'probe')
  redis.call('DEL', KEYS[3])
  redis.call('HINCRBY', KEYS[1], 'trips', 1)
  event = name
end

if outcome == 'throttled' then
  local until_ms = now + tonumber(ARGV[3])
  if until_ms > (tonumber(st[4]) or 0) then
    redis.call('HSET', KEYS[1], 'pause_until', until_ms)
    -- Reported only when the pause grows: a burst of 429s is one event, not one per request.
    event = 'paused'
  end
  redis.call('HINCRBY', KEYS[1], 'throttled_total', 1)
  -- The host answered, but said nothing about its health: no verdict; the first request after
  -- the pause becomes the new probe.
  if is_probe then redis.call('HDEL', KEYS[1], 'probe') end
elseif outcome == 'failure' then
  redis.call('HINCRBY', KEYS[1], 'failures_total', 1)
  if is_probe then
    open('reopened')
  elseif open_until == 0 then
    redis.call('ZADD', KEYS[3], now, id)
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[6]))
    redis.call('PEXPIRE', KEYS[3], math.ceil(tonumber(ARGV[6])))
    if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[5]) then open('opened') end
  end
  -- Failures of requests that began before the breaker opened tell nothing new: not counted.
elseif outcome == 'ok' then
  if is_probe then
    redis.call('HDEL', KEYS[1], 'open_until', 'probe')
    redis.call('DEL', KEYS[3])
    event = 'closed'
  end
elseif is_probe then
  redis.call('HDEL', KEYS[1], 'probe')
end
redis.call('PEXPIRE', KEYS[1], key_ttl)
return {held, event}
"""

# KEYS: state, permits.  ARGV: permit id, ttl ms, concurrency (0 = none), key ttl ms.
# Reply: the new expiry (ms), or 0 when the permit had expired and there is no room to take it back.
RENEW = _NOW + """
local expires = now + tonumber(ARGV[2])
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not (score and tonumber(score) > now) then
  -- Expired (the worker stalled past the TTL): take the place back only if it is free, so the
  -- count stays within the limit; otherwise the download goes on uncounted until it ends.
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  local conc = tonumber(ARGV[3])
  if conc > 0 and redis.call('ZCARD', KEYS[2]) >= conc then return 0 end
end
redis.call('ZADD', KEYS[2], expires, ARGV[1])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]))
return math.floor(expires)
"""

# KEYS: recent, then state, permits, failures of each host.  ARGV: failure window ms, the hosts.
# Reply: {now ms, then per host: {last seen, permits in use, recent failures, state fields...}}.
STATE_FIELDS = ("pause_until", "open_until", "probe", "rate", "rate_at", "limits", "hold_ms", "granted",
                "waits_rate", "waits_concurrency", "waits_paused", "waits_open", "failures_total",
                "throttled_total", "trips")
SNAPSHOT = _NOW + """
local fields = {""" + ", ".join(f"'{name}'" for name in STATE_FIELDS) + """}
local out = {tostring(now)}
for i = 2, #ARGV do
  local k = 2 + (i - 2) * 3
  local row = {redis.call('ZSCORE', KEYS[1], ARGV[i]) or '',
               redis.call('ZCOUNT', KEYS[k + 1], '(' .. now, '+inf'),
               redis.call('ZCOUNT', KEYS[k + 2], now - tonumber(ARGV[1]), '+inf')}
  local values = redis.call('HMGET', KEYS[k], unpack(fields))
  for j = 1, #fields do row[#row + 1] = values[j] or '' end
  out[#out + 1] = row
end
return out
"""
