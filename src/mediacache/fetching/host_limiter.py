"""Per-host politeness shared by every worker on one Redis: rate, concurrency, pauses and a breaker.

`acquire` answers a Grant, or a Wait saying how long and why; `release` gives the permit back and
records the outcome. The decisions are Lua scripts (host_scripts.py), so they are atomic across
processes and machines and use Redis's clock, not the workers'.

What one process asks at one moment goes to Redis in one script call (host_scripts.BATCH, carried
by host_batch.py): every acquire and release queued while the previous call was out, or within the
same turn of the event loop. A worker hands a finished download's permit back with `release_soon`,
which does not wait: a healthy outcome rides along with the next call (an acquire of this process,
or at the latest after `release_linger_s`), a failure or a throttled answer goes at once. So a busy worker pays
about one round trip per download rather than two, and a finished job never waits on Redis.

Failure policy: when Redis does not answer, `acquire` answers Wait('redis_unavailable') (never an
exception, never "go ahead unlimited"), `release` and `renew` log and return (the permit lapses
within its TTL); the problem is logged once per outage, and its end once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from mediacache.fetching import host_scripts
from mediacache.fetching.host_batch import BatchOp, ScriptBatch
from mediacache.fetching.host_rules import HostRule, normalize_host

log = logging.getLogger("mediacache.fetching.host_limiter")

WaitReason = Literal["rate", "concurrency", "paused", "open", "redis_unavailable"]
OutcomeKind = Literal["ok", "failure", "throttled", "abandoned"]
BreakerState = Literal["closed", "open", "half_open"]

# How many hosts `snapshot()` can list without being told which: the most recently used ones.
RECENT_HOSTS_MAX = 500
# Host keys live this long after their last use; a host seen once does not stay in Redis for ever.
KEY_TTL_MS = 24 * 3600 * 1000
# The rate shown by snapshot() is an exponential average over about this long.
RATE_AVERAGE_MS = 5000
# Until a host has released a permit, waits for its concurrency assume downloads take this long.
DEFAULT_HOLD_MS = 1000
# A healthy release waits at most this long for a call to go with: the next acquire of this
# process usually comes a BullMQ round trip after a job's end (a millisecond, or tens on a loaded
# machine). Short while the host is near its concurrency limit, where a permit held longer can
# keep another worker waiting; longer while it had room to spare, where it keeps no one waiting.
RELEASE_LINGER_S = 0.005
SPARE_LINGER_S = 0.1
# Hosts whose keys are remembered (built once, not per call), as in host_rules.py.
HOST_CACHE_MAX = 4096


def key_prefix_for(queue_prefix: str) -> str:
    """The limiter's key prefix beside the queue's own keys, e.g. `bull:media-cache:hosts`."""
    return f"{queue_prefix}:media-cache:hosts"


@dataclass(frozen=True, slots=True)
class Grant:
    """Permission for one request to `host`; hand it back with `release` when the download ends."""

    host: str
    permit_id: str
    rule: HostRule
    granted_at_ms: int  # Redis time
    expires_at_ms: int  # the permit lapses then unless renewed
    probe: bool = False  # the single request let through by a half-open breaker
    # The host had no concurrency limit, or used at most half of it with this permit.
    room_to_spare: bool = False


@dataclass(frozen=True, slots=True)
class Wait:
    """Not now: try again in `retry_in_s` seconds."""

    host: str
    retry_in_s: float
    reason: WaitReason


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a request to the host ended, as the breaker and the pause need to know it.

    ok: the host answered (any status but 5xx and throttling: a 404 is a healthy host).
    failure: time-out, connection error, 5xx. throttled: 429 or 503 with Retry-After.
    abandoned: we stopped before an answer (shutdown, cancellation): no verdict on the host.
    """

    kind: OutcomeKind
    retry_after_s: float | None = None

    @classmethod
    def ok(cls) -> Outcome:
        return _OK

    @classmethod
    def failure(cls) -> Outcome:
        return _FAILURE

    @classmethod
    def throttled(cls, retry_after_s: float | None = None) -> Outcome:
        return cls("throttled", retry_after_s)

    @classmethod
    def abandoned(cls) -> Outcome:
        return _ABANDONED


_OK, _FAILURE, _ABANDONED = Outcome("ok"), Outcome("failure"), Outcome("abandoned")


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """`failures` within `window_s` open the breaker for `open_s`; then one probe decides."""

    failures: int = 5
    window_s: float = 30.0
    open_s: float = 30.0


@dataclass(frozen=True, slots=True)
class HostState:
    """One host as the limiter sees it, for stats, metrics and the dashboard (times: epoch seconds)."""

    host: str
    breaker: BreakerState
    open_until: float | None
    recent_failures: int  # within the breaker's window
    rate_per_s: float  # grants per second, averaged over the last few seconds
    permits_in_use: int
    paused_until: float | None
    last_seen: float | None
    limits: str | None  # the rule as last applied, e.g. "20/s:8"
    average_hold_s: float | None
    granted_total: int = 0
    failures_total: int = 0
    throttled_total: int = 0
    breaker_trips: int = 0
    waits_total: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _HostKeys:
    name: str  # normalized
    acquire_keys: tuple[bytes, bytes]  # state, permits
    release_keys: tuple[bytes, bytes, bytes]  # state, permits, failures


class _Renewing:
    """Most downloads end long before a third of the TTL: a timer costs much less than a task per
    download, and the renewing task only starts for the long ones. A class rather than a generator
    context manager, which cost twice as much to enter and leave (measured: 19 µs against 10 µs)."""

    __slots__ = ("_done", "_grant", "_limiter", "_task", "_timer")

    def __init__(self, limiter: HostLimiter, grant: Grant) -> None:
        self._limiter, self._grant = limiter, grant
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._done: asyncio.Event | None = None

    async def __aenter__(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self._limiter.renew_interval_s, self._start)

    def _start(self) -> None:
        self._done = asyncio.Event()
        self._task = asyncio.create_task(self._limiter._keep_renewing(self._grant, self._done))

    async def __aexit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None and self._done is not None:
            self._done.set()
            self._task.cancel()
            # Bounded: should the cancellation be lost (one arriving as a renewal's own time-out
            # fires), the flag still ends the loop at its next turn.
            await asyncio.wait({self._task}, timeout=self._limiter.timeout_s + 1)


class HostLimiterUnavailable(Exception):
    """Redis did not answer a read of the limiter's state (snapshot); the integrator maps it."""


class HostLimiter:
    """The per-host limiter; one per process, sharing state with all others through Redis.

    `client` is a redis.asyncio client (decode_responses either way); `timeout_s` bounds every call
    whatever the client's own time-outs and retries (redis-py's default retries a refused
    connection for seconds). Every key lives under `key_prefix` (see `key_prefix_for`).

    A Wait's `retry_in_s` gives each waiter its own slot in a per-host line (one rate interval, or
    one expected permit release, apart; at most `max_spread_s` beyond the earliest possible time),
    so a crowd of waiting jobs comes back spread out. The line counts every Wait as one more
    waiter: callers must not ask again before `retry_in_s`, or they push everyone back.

    `permit_ttl_s` is how soon the permits of a killed worker come back; a holder renews for
    longer downloads (`renewing`). `breaker` sets when the circuit opens; `throttle_default_s` is
    the pause after a 429/503 without Retry-After; `max_pause_s` caps any Retry-After.
    `release_linger_s` is how long a healthy `release_soon` may wait for a call to go with, and
    `spare_linger_s` the same when the host had room to spare (Grant.room_to_spare).
    Close with `aclose` (it sends what is still queued).
    """

    def __init__(self, client: aioredis.Redis, key_prefix: str, *, permit_ttl_s: float = 60.0,
                 breaker: BreakerPolicy | None = None, throttle_default_s: float = 5.0,
                 max_pause_s: float = 3600.0, probe_poll_s: float = 1.0, max_spread_s: float = 60.0,
                 redis_retry_s: float = 2.0, timeout_s: float = 2.0,
                 release_linger_s: float = RELEASE_LINGER_S, spare_linger_s: float = SPARE_LINGER_S) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self.permit_ttl_ms = max(1, int(permit_ttl_s * 1000))
        self.breaker = breaker or BreakerPolicy()
        self.throttle_default_s = throttle_default_s
        self.max_pause_s = max_pause_s
        self.probe_poll_ms = int(probe_poll_s * 1000)
        self.max_spread_ms = int(max_spread_s * 1000)
        self.redis_retry_s = redis_retry_s
        self.timeout_s = timeout_s
        self.release_linger_s = release_linger_s
        self.spare_linger_s = spare_linger_s
        policy = self.breaker
        self._batch = client.register_script(host_scripts.batch_script({
            "permit_ttl_ms": self.permit_ttl_ms, "recent_max": RECENT_HOSTS_MAX, "key_ttl_ms": KEY_TTL_MS,
            "probe_poll_ms": self.probe_poll_ms, "default_hold_ms": DEFAULT_HOLD_MS,
            "rate_average_ms": RATE_AVERAGE_MS, "max_spread_ms": self.max_spread_ms,
            "breaker_failures": policy.failures, "breaker_window_ms": int(policy.window_s * 1000),
            "breaker_open_ms": int(policy.open_s * 1000)}))
        self._renew = client.register_script(host_scripts.RENEW)
        self._snapshot = client.register_script(host_scripts.SNAPSHOT)
        self._down_since: float | None = None
        self._recent_key = f"{key_prefix}:recent".encode()
        # What an acquire sends but its permit id, per host and rule, built once: redis-py packs
        # every argument anew on each call, the largest part of a call's client CPU (profiled).
        self._acquire_tails: dict[tuple[str, HostRule], bytes] = {}
        self._hosts: dict[str, _HostKeys] = {}
        # Permit ids: unique to this limiter, then a counter (cheaper than random bytes per permit).
        self._permit_prefix = os.urandom(6).hex()
        self._permit_numbers = itertools.count()
        self._batch_calls = ScriptBatch(client, self._batch, leading_keys=[self._recent_key], timeout_s=timeout_s,
                                        on_reply=self._answer, on_down=self._batch_went_down, on_up=self._came_back)

    @property
    def calls(self) -> int:
        """Batch calls sent (round trips), for benchmarks and tests."""
        return self._batch_calls.calls

    @property
    def renew_interval_s(self) -> float:
        """How often a holder renews a permit: a third of its TTL, so one lost renewal is survived."""
        return self.permit_ttl_ms / 3000.0

    def _host_keys(self, host: str) -> _HostKeys:
        found = self._hosts.get(host)
        if found is None:
            if len(self._hosts) >= HOST_CACHE_MAX:
                self._hosts.clear()
            name = normalize_host(host)
            base = f"{self.key_prefix}:{name}"
            state, permits = f"{base}:state".encode(), f"{base}:permits".encode()
            found = self._hosts[host] = _HostKeys(name, (state, permits), (state, permits, f"{base}:failures".encode()))
        return found

    async def acquire(self, host: str, rule: HostRule) -> Grant | Wait:
        """A Grant to start the request now, or a Wait saying when to ask again; one round trip,
        shared with whatever else this process asks at the same moment."""
        entry = self._host_keys(host)
        tail = self._acquire_tails.get((entry.name, rule))
        if tail is None:
            if len(self._acquire_tails) >= HOST_CACHE_MAX:
                self._acquire_tails.clear()
            tail = self._acquire_tails[(entry.name, rule)] = _acquire_tail(entry.name, rule)
        permit_id = f"{self._permit_prefix}{next(self._permit_numbers)}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._batch_calls.submit(BatchOp("a", entry.acquire_keys, b"a|" + permit_id.encode() + tail, future,
                                         send_by=0.0, context=(rule, entry.name)))
        try:
            reply = await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._abandon(future.result(), op_rule=rule, host=entry.name)
            raise
        if reply is None:
            return Wait(entry.name, self.redis_retry_s, "redis_unavailable")
        if int(reply[0]) == 1:
            return _grant(entry.name, rule, reply)
        reason: WaitReason = _text(reply[2])  # type: ignore[assignment]
        return Wait(entry.name, int(reply[1]) / 1000, reason)

    async def release(self, grant: Grant, outcome: Outcome) -> None:
        """Gives the permit back and records how the request ended; returns once Redis has it
        (or did not answer: the permit then lapses within its TTL)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._batch_calls.submit(self._release_op(grant, outcome, future, send_by=0.0))
        # The release goes out whether or not this caller waits for it to the end.
        await asyncio.shield(future)

    def release_soon(self, grant: Grant, outcome: Outcome) -> None:
        """`release` without waiting: a failure, a throttled answer or a probe's verdict goes at
        once; a healthy outcome goes with this process's next call, within `release_linger_s` (or
        `spare_linger_s`). Holding the permit that much longer can only make the host's limits
        stricter, never looser."""
        if grant.probe or outcome.kind in ("failure", "throttled"):
            send_by = 0.0
        else:
            send_by = asyncio.get_running_loop().time() + (
                self.spare_linger_s if grant.room_to_spare else self.release_linger_s)
        self._batch_calls.submit(self._release_op(grant, outcome, None, send_by=send_by))

    def _release_op(self, grant: Grant, outcome: Outcome, future: asyncio.Future[Any] | None, *,
                    send_by: float) -> BatchOp:
        pause_s = 0.0
        if outcome.kind == "throttled":
            asked_s = outcome.retry_after_s if outcome.retry_after_s is not None else self.throttle_default_s
            pause_s = min(max(asked_s, 0.0), self.max_pause_s)
        arg = f"r|{grant.permit_id}|{outcome.kind}|{int(pause_s * 1000)}|{grant.granted_at_ms}|".encode()
        return BatchOp("r", self._host_keys(grant.host).release_keys, arg, future, send_by=send_by,
                       stamp_age=True, context=(grant, pause_s))

    async def flush(self) -> None:
        """Sends every queued release now and returns once Redis has answered (or not)."""
        await self._batch_calls.flush()

    async def aclose(self) -> None:
        """Sends what is queued, then closes the client."""
        try:
            await self._batch_calls.aclose()
        finally:
            await self.client.aclose()

    def _answer(self, op: BatchOp, reply: Any) -> Any:
        if int(reply[0]) == -1:
            # A bug, not an outage: loud, and the caller waits rather than going ahead.
            log.error("host limiter: the script failed for host %s: %s", _host_of(op), _text(reply[1]))
            reply = None
        if op.label == "r":
            grant, pause_s = op.context
            if reply is not None:
                self._log_event(grant, pause_s, _text(reply[1]))
        elif op.future is not None and op.future.done():
            rule, host = op.context
            self._abandon(reply, op_rule=rule, host=host)
        return reply

    def _abandon(self, reply: Any, *, op_rule: HostRule, host: str) -> None:
        """A grant whose caller is gone (cancelled) goes straight back."""
        if reply is not None and int(reply[0]) == 1:
            self.release_soon(_grant(host, op_rule, reply), Outcome.abandoned())

    def _log_event(self, grant: Grant, pause_s: float, event: str) -> None:
        policy = self.breaker
        if event == "opened":
            log.warning("host %s: %d failures within %g s; no requests to it for %g s",
                        grant.host, policy.failures, policy.window_s, policy.open_s)
        elif event == "reopened":
            log.warning("host %s: the probe failed; no requests to it for another %g s", grant.host, policy.open_s)
        elif event == "closed":
            log.info("host %s: the probe succeeded; requests resume", grant.host)
        elif event == "paused":
            log.info("host %s asked to wait: no requests to it for %.1f s", grant.host, pause_s)

    async def renew(self, grant: Grant) -> bool:
        """Extends the permit by its TTL; False when it had lapsed with no room to take it back,
        or Redis did not answer (the download goes on either way)."""
        state_key, permits_key = self._host_keys(grant.host).acquire_keys
        try:
            async with asyncio.timeout(self.timeout_s):
                expires_ms = await self._renew(
                    keys=[state_key, permits_key],
                    args=[grant.permit_id, self.permit_ttl_ms, grant.rule.concurrency or 0, KEY_TTL_MS])
        except (RedisError, OSError, TimeoutError) as exc:
            self._went_down(exc, "renew")
            return False
        self._came_back()
        return int(expires_ms) > 0

    def renewing(self, grant: Grant) -> _Renewing:
        """`async with limiter.renewing(grant):` renews `grant` every `renew_interval_s` while the
        body runs (for long downloads)."""
        return _Renewing(self, grant)

    async def _keep_renewing(self, grant: Grant, done: asyncio.Event) -> None:
        while not done.is_set():
            if not await self.renew(grant):
                log.debug("permit %s of host %s could not be renewed", grant.permit_id, grant.host)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self.renew_interval_s)

    async def snapshot(self, hosts: Sequence[str] | None = None, *, limit: int = 50) -> list[HostState]:
        """The state of `hosts`, or of the `limit` most recently used hosts; two round trips at most."""
        recent_key = self._recent_key
        try:
            async with asyncio.timeout(self.timeout_s):
                if hosts is None:
                    names = [_text(h) for h in await self.client.zrevrange(recent_key, 0, max(0, limit - 1))]
                else:
                    names = [normalize_host(h) for h in hosts]
                if not names:
                    return []
                keys: list[bytes] = [recent_key, *(k for name in names for k in self._host_keys(name).release_keys)]
                reply = await self._snapshot(keys=keys, args=[int(self.breaker.window_s * 1000), *names])
        except (RedisError, OSError, TimeoutError) as exc:
            raise HostLimiterUnavailable(f"Redis did not answer while reading host limiter state: {exc}") from exc
        now_ms = float(_text(reply[0]))
        return [_host_state(name, row, now_ms) for name, row in zip(names, reply[1:], strict=True)]

    def _went_down(self, exc: BaseException, what: str) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("host limiter: Redis did not answer (%s: %s: %s); downloads wait until it does",
                        what, type(exc).__name__, exc)

    def _batch_went_down(self, exc: BaseException, ops: list[BatchOp]) -> None:
        self._went_down(exc, "acquire" if any(op.label == "a" for op in ops) else "release")

    def _came_back(self) -> None:
        if self._down_since is not None:
            log.info("host limiter: Redis answers again after %.1f s", time.monotonic() - self._down_since)
            self._down_since = None


def _acquire_tail(host: str, rule: HostRule) -> bytes:
    """An acquire's fields after its permit id (host_scripts.BATCH): interval ms, burst tolerance
    ms, concurrency, the rule's text, and last the host (the only field that could hold the separator)."""
    interval_ms = 1000 / rule.rate_per_s if rule.rate_per_s else 0.0
    fields = [repr(interval_ms), repr((rule.burst - 1) * interval_ms), str(rule.concurrency or 0), rule.limits_text]
    if any(host_scripts.SEP in field for field in fields):
        raise ValueError(f"host rule {rule} cannot be sent to the limiter's script")
    return "".join(host_scripts.SEP + field for field in [*fields, host]).encode()


def _host_of(op: BatchOp) -> str:
    return op.context[1] if op.label == "a" else op.context[0].host


def _grant(host: str, rule: HostRule, reply: Sequence[Any]) -> Grant:
    return Grant(host, _text(reply[1]), rule, int(reply[2]), int(reply[3]), probe=int(reply[4]) == 1,
                 room_to_spare=int(reply[5]) == 1)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _number(value: Any) -> float | None:
    text = _text(value)
    return float(text) if text else None


def _host_state(host: str, row: Sequence[Any], now_ms: float) -> HostState:
    last_seen, in_use, recent_failures, *values = row
    f = dict(zip(host_scripts.STATE_FIELDS, values, strict=True))
    open_until = _number(f["open_until"])
    if open_until is None:
        breaker: BreakerState = "closed"
    else:
        breaker = "open" if now_ms < open_until else "half_open"
    paused_until = _number(f["pause_until"])
    rate, rate_at = _number(f["rate"]) or 0.0, _number(f["rate_at"])
    if rate_at is not None:
        rate *= math.exp(-max(0.0, now_ms - rate_at) / RATE_AVERAGE_MS)
    hold_ms = _number(f["hold_ms"])
    seen = _number(last_seen)

    def count(name: str) -> int:
        return int(_number(f[name]) or 0)

    return HostState(
        host=host, breaker=breaker,
        open_until=open_until / 1000 if open_until is not None and breaker == "open" else None,
        recent_failures=int(recent_failures), rate_per_s=round(rate, 3), permits_in_use=int(in_use),
        paused_until=paused_until / 1000 if paused_until is not None and paused_until > now_ms else None,
        last_seen=seen / 1000 if seen is not None else None, limits=_text(f["limits"]) or None,
        average_hold_s=hold_ms / 1000 if hold_ms is not None else None,
        granted_total=count("granted"), failures_total=count("failures_total"),
        throttled_total=count("throttled_total"), breaker_trips=count("trips"),
        waits_total={reason: count(f"waits_{reason}") for reason in ("rate", "concurrency", "paused", "open")},
    )
