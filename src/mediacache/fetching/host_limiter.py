"""Per-host politeness shared by every worker on one Redis: rate, concurrency, pauses and a breaker.

One round trip per download start (`acquire`: a Grant, or a Wait saying how long and why) and one
per end (`release`, which records the outcome). The decisions are Lua scripts (host_scripts.py), so
they are atomic across processes and machines and use Redis's clock, not the workers'.

Failure policy: when Redis does not answer, `acquire` answers Wait('redis_unavailable') (never an
exception, never "go ahead unlimited"), `release` and `renew` log and return; the problem is logged
once per outage, and its end once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from mediacache.fetching import host_scripts
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
    """

    def __init__(self, client: aioredis.Redis, key_prefix: str, *, permit_ttl_s: float = 60.0,
                 breaker: BreakerPolicy | None = None, throttle_default_s: float = 5.0,
                 max_pause_s: float = 3600.0, probe_poll_s: float = 1.0, max_spread_s: float = 60.0,
                 redis_retry_s: float = 2.0, timeout_s: float = 2.0) -> None:
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
        self._acquire = client.register_script(host_scripts.ACQUIRE)
        self._release = client.register_script(host_scripts.RELEASE)
        self._renew = client.register_script(host_scripts.RENEW)
        self._snapshot = client.register_script(host_scripts.SNAPSHOT)
        self._down_since: float | None = None
        # Arguments that never change are encoded once: redis-py would encode each of them again
        # on every call, a dozen per acquire (66 µs of client CPU per acquire+release, profiled).
        self._recent_key = f"{key_prefix}:recent"
        self._acquire_args = _encoded((self.permit_ttl_ms, RECENT_HOSTS_MAX, KEY_TTL_MS, self.probe_poll_ms,
                                       DEFAULT_HOLD_MS, RATE_AVERAGE_MS, self.max_spread_ms))
        policy = self.breaker
        self._release_args = _encoded((policy.failures, int(policy.window_s * 1000), int(policy.open_s * 1000),
                                       KEY_TTL_MS))
        self._rule_args: dict[HostRule, tuple[bytes, ...]] = {}

    @property
    def renew_interval_s(self) -> float:
        """How often a holder renews a permit: a third of its TTL, so one lost renewal is survived."""
        return self.permit_ttl_ms / 3000

    def _keys(self, host: str) -> tuple[str, str, str]:
        base = f"{self.key_prefix}:{host}"
        return f"{base}:state", f"{base}:permits", f"{base}:failures"

    async def acquire(self, host: str, rule: HostRule) -> Grant | Wait:
        """One round trip: a Grant to start the request now, or a Wait saying when to ask again."""
        host = normalize_host(host)
        state_key, permits_key, _ = self._keys(host)
        rule_args = self._rule_args.get(rule)
        if rule_args is None:
            rule_args = self._rule_args[rule] = _encoded(_rule_args(rule))
        try:
            # A time-out after the script ran leaves its permit unknown to us: it lapses within
            # the permit TTL, a smaller harm than an acquire that hangs with Redis.
            async with asyncio.timeout(self.timeout_s):
                reply = await self._acquire(keys=[state_key, permits_key, self._recent_key],
                                            args=[os.urandom(9).hex().encode(), host, *rule_args, *self._acquire_args])
        except (RedisError, OSError, TimeoutError) as exc:
            self._went_down(exc, "acquire")
            return Wait(host, self.redis_retry_s, "redis_unavailable")
        self._came_back()
        if int(reply[0]) == 1:
            return Grant(host, _text(reply[1]), rule, int(reply[2]), int(reply[3]), probe=int(reply[4]) == 1)
        reason: WaitReason = _text(reply[2])  # type: ignore[assignment]
        return Wait(host, int(reply[1]) / 1000, reason)

    async def release(self, grant: Grant, outcome: Outcome) -> None:
        """One round trip: gives the permit back and records how the request ended."""
        state_key, permits_key, failures_key = self._keys(grant.host)
        pause_s = 0.0
        if outcome.kind == "throttled":
            asked_s = outcome.retry_after_s if outcome.retry_after_s is not None else self.throttle_default_s
            pause_s = min(max(asked_s, 0.0), self.max_pause_s)
        args: list[bytes | str | int] = [grant.permit_id, outcome.kind, int(pause_s * 1000), grant.granted_at_ms,
                                         *self._release_args]
        try:
            async with asyncio.timeout(self.timeout_s):
                reply = await self._release(keys=[state_key, permits_key, failures_key], args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            # The permit lapses by itself within its TTL; the outcome is lost, which the breaker survives.
            self._went_down(exc, "release")
            return
        self._came_back()
        event = _text(reply[1])
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
        state_key, permits_key, _ = self._keys(grant.host)
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

    @contextlib.asynccontextmanager
    async def renewing(self, grant: Grant) -> AsyncIterator[None]:
        """Renews `grant` every `renew_interval_s` while the body runs (for long downloads).

        Most downloads end long before a third of the TTL: a timer costs much less than a task
        per download, and the renewing task only starts for the long ones.
        """
        tasks: list[asyncio.Task[None]] = []
        done = asyncio.Event()
        timer = asyncio.get_running_loop().call_later(
            self.renew_interval_s, lambda: tasks.append(asyncio.create_task(self._keep_renewing(grant, done))))
        try:
            yield
        finally:
            timer.cancel()
            done.set()
            for task in tasks:
                task.cancel()
            if tasks:
                # Bounded: should the cancellation be lost (one arriving as a renewal's own time-out
                # fires), the flag still ends the loop at its next turn.
                await asyncio.wait(tasks, timeout=self.timeout_s + 1)

    async def _keep_renewing(self, grant: Grant, done: asyncio.Event) -> None:
        while not done.is_set():
            if not await self.renew(grant):
                log.debug("permit %s of host %s could not be renewed", grant.permit_id, grant.host)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self.renew_interval_s)

    async def snapshot(self, hosts: Sequence[str] | None = None, *, limit: int = 50) -> list[HostState]:
        """The state of `hosts`, or of the `limit` most recently used hosts; two round trips at most."""
        recent_key = f"{self.key_prefix}:recent"
        try:
            async with asyncio.timeout(self.timeout_s):
                if hosts is None:
                    names = [_text(h) for h in await self.client.zrevrange(recent_key, 0, max(0, limit - 1))]
                else:
                    names = [normalize_host(h) for h in hosts]
                if not names:
                    return []
                keys = [recent_key, *(k for name in names for k in self._keys(name))]
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

    def _came_back(self) -> None:
        if self._down_since is not None:
            log.info("host limiter: Redis answers again after %.1f s", time.monotonic() - self._down_since)
            self._down_since = None


def _rule_args(rule: HostRule) -> tuple[float, float, int, str]:
    """The rule as the acquire script takes it: interval ms, burst tolerance ms, concurrency, text."""
    interval_ms = 1000 / rule.rate_per_s if rule.rate_per_s else 0.0
    return interval_ms, (rule.burst - 1) * interval_ms, rule.concurrency or 0, rule.limits_text


def _encoded(values: Sequence[Any]) -> tuple[bytes, ...]:
    return tuple(str(v).encode() if isinstance(v, str) else repr(v).encode() for v in values)


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
