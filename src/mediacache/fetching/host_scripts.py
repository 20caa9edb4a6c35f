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
- `P:recent` (sorted set): host -> last acquire (ms), trimmed to the most recent few hundred
  (and its time to live renewed) whenever a host joins it.

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

# The limiter's settings, written into the batch script as constants (batch_script below): one
# script per configuration, and no arguments that say the same on every call.
SETTINGS = ("permit_ttl_ms", "recent_max", "key_ttl_ms", "probe_poll_ms", "default_hold_ms", "rate_average_ms",
            "max_spread_ms", "breaker_failures", "breaker_window_ms", "breaker_open_ms")
# Separates the fields of one operation's argument; no field but the host (always last) holds it.
SEP = "|"

# Acquisitions and releases of one worker process, any hosts, in one script call: one round trip
# (and one call's worth of client CPU) for all that the worker asks at one moment, and a release
# can go in the same call as the next acquire. Each operation is decided exactly as if it ran alone,
# in the order given (a release before an acquire frees its place first).
#
# KEYS: recent, then per operation its host's keys: state, permits (acquire); state, permits,
#       failures (release).
# ARGV: one per operation, its fields joined by SEP (redis-py packs each argument separately, so
#       one argument per operation costs the client far less than one per field):
#   acquire: a|permit id|interval ms (0 = no rate limit)|burst tolerance ms|concurrency (0 = none)|
#            limits text (the rule's)|host
#   release: r|permit id|outcome (ok|failure|throttled|abandoned)|pause ms|granted at ms|
#            ms the release waited in the worker before this call (not counted as holding time)
# Reply: per operation, in order,
#   acquire: {1, permit id, granted at ms, expires at ms, probe 0|1, room to spare 0|1}
#            or {0, wait ms, reason}  (room to spare: no concurrency limit, or at most half used)
#   release: {permit was still held 0|1, breaker event: '' | 'opened' | 'reopened' | 'closed' | 'paused'}
#   either:  {-1, error text} should the operation fail (the others still run).
_BATCH = """
local ttl = {permit_ttl_ms}
local recent_max = {recent_max}
local key_ttl = {key_ttl_ms}
local probe_poll = {probe_poll_ms}
local default_hold = {default_hold_ms}
local avg_ms = {rate_average_ms}
local max_spread = {max_spread_ms}
local threshold = {breaker_failures}
local window = {breaker_window_ms}
local open_ms = {breaker_open_ms}

local function acquire(sk, pk, id, interval, tolerance, conc, limits)
  local st = redis.call('HMGET', sk, 'tat', 'pause_until', 'open_until', 'probe', 'line', 'hold_ms',
                        'rate', 'rate_at', 'granted')
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
    redis.call('HSET', sk, 'line', at + step)
    redis.call('HINCRBY', sk, 'waits_' .. reason, 1)
    redis.call('PEXPIRE', sk, key_ttl)
    return {0, math.max(1, math.ceil(at - now)), reason}
  end

  if pause_until > now then return wait(pause_until - now, 'paused', any_step) end

  redis.call('ZREMRANGEBYSCORE', pk, '-inf', now)

  local probe = false
  if open_until > 0 then
    if now < open_until then return wait(open_until - now, 'open', any_step) end
    -- Half-open: one probe at a time. A probe whose worker died stops counting when its permit
    -- expires (it was dropped just above), and the next caller becomes the probe.
    if st[4] and redis.call('ZSCORE', pk, st[4]) then return wait(probe_poll, 'open', any_step) end
    probe = true
  end

  -- Concurrency before rate: a caller turned away for concurrency must not use up a rate slot.
  local held = 0
  if conc > 0 then
    held = redis.call('ZCARD', pk)
    if held >= conc then
      local first = redis.call('ZRANGE', pk, 0, 0, 'WITHSCORES')
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
  redis.call('ZADD', pk, expires, id)
  local rate = (tonumber(st[7]) or 0) * math.exp(-(now - (tonumber(st[8]) or now)) / avg_ms) + 1000 / avg_ms
  -- The count is read and written with the rest (the script is atomic): one command, not two.
  local granted = (tonumber(st[9]) or 0) + 1
  if probe then
    redis.call('HSET', sk, 'tat', tat, 'rate', rate, 'rate_at', now, 'limits', limits, 'granted', granted,
               'probe', id)
  else
    redis.call('HSET', sk, 'tat', tat, 'rate', rate, 'rate_at', now, 'limits', limits, 'granted', granted)
  end
  redis.call('PEXPIRE', sk, key_ttl)
  redis.call('PEXPIRE', pk, key_ttl)
  local spare = (conc == 0 or (held + 1) * 2 <= conc) and 1 or 0
  return {1, id, math.floor(now), math.floor(expires), probe and 1 or 0, spare}
end

local function release(sk, pk, fk, id, outcome, pause_ms, granted_at, queued_ms)
  local held = redis.call('ZREM', pk, id)
  local st = redis.call('HMGET', sk, 'open_until', 'probe', 'hold_ms', 'pause_until')
  local open_until = tonumber(st[1]) or 0
  local is_probe = st[2] == id
  local event = ''

  if outcome ~= 'abandoned' then
    local took = math.max(0, now - granted_at - queued_ms)
    local hold = tonumber(st[3])
    redis.call('HSET', sk, 'hold_ms', hold and (hold * 0.8 + took * 0.2) or took)
  end

  local function open(name)
    redis.call('HSET', sk, 'open_until', now + open_ms)
    redis.call('HDEL', sk, 'probe')
    redis.call('DEL', fk)
    redis.call('HINCRBY', sk, 'trips', 1)
    event = name
  end

  if outcome == 'throttled' then
    local until_ms = now + pause_ms
    if until_ms > (tonumber(st[4]) or 0) then
      redis.call('HSET', sk, 'pause_until', until_ms)
      -- Reported only when the pause grows: a burst of 429s is one event, not one per request.
      event = 'paused'
    end
    redis.call('HINCRBY', sk, 'throttled_total', 1)
    -- The host answered, but said nothing about its health: no verdict; the first request after
    -- the pause becomes the new probe.
    if is_probe then redis.call('HDEL', sk, 'probe') end
  elseif outcome == 'failure' then
    redis.call('HINCRBY', sk, 'failures_total', 1)
    if is_probe then
      open('reopened')
    elseif open_until == 0 then
      redis.call('ZADD', fk, now, id)
      redis.call('ZREMRANGEBYSCORE', fk, '-inf', now - window)
      redis.call('PEXPIRE', fk, math.ceil(window))
      if redis.call('ZCARD', fk) >= threshold then open('opened') end
    end
    -- Failures of requests that began before the breaker opened tell nothing new: not counted.
  elseif outcome == 'ok' then
    if is_probe then
      redis.call('HDEL', sk, 'open_until', 'probe')
      redis.call('DEL', fk)
      event = 'closed'
    end
  elseif is_probe then
    redis.call('HDEL', sk, 'probe')
  end
  redis.call('PEXPIRE', sk, key_ttl)
  return {held, event}
end

local out = {}
local recent = {}
local k = 2
for i = 1, #ARGV do
  local op = ARGV[i]
  local ok, reply
  if string.sub(op, 1, 1) == 'a' then
    local id, interval, tolerance, conc, limits, host =
      string.match(op, '^a|([^|]+)|([^|]+)|([^|]+)|([^|]+)|([^|]+)|(.*)$')
    ok, reply = pcall(acquire, KEYS[k], KEYS[k + 1], id, tonumber(interval), tonumber(tolerance),
                      tonumber(conc), limits)
    recent[#recent + 1] = now
    recent[#recent + 1] = host
    k = k + 2
  else
    local id, outcome, pause_ms, granted_at, queued_ms =
      string.match(op, '^r|([^|]+)|([^|]+)|([^|]+)|([^|]+)|([^|]+)$')
    ok, reply = pcall(release, KEYS[k], KEYS[k + 1], KEYS[k + 2], id, outcome, tonumber(pause_ms),
                      tonumber(granted_at), tonumber(queued_ms))
    k = k + 3
  end
  if not ok then
    reply = {-1, type(reply) == 'table' and tostring(reply.err) or tostring(reply)}
  end
  out[#out + 1] = reply
end
-- Trimmed, and its time to live renewed, only when a host is new to it: the list can only have
-- grown then, and a list whose hosts were all seen a day ago is rebuilt by the next acquires.
if #recent > 0 and redis.call('ZADD', KEYS[1], unpack(recent)) > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(recent_max + 1))
  redis.call('PEXPIRE', KEYS[1], key_ttl)
end
return out
"""


def batch_script(settings: dict[str, int]) -> str:
    """The batch script with the limiter's `settings` (every name of SETTINGS, whole numbers)."""
    body = _BATCH
    for name in SETTINGS:
        body = body.replace("{" + name + "}", str(int(settings[name])))
    return _NOW + body

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
