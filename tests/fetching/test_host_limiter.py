"""The host limiter against the real Redis: rate, concurrency, pauses, the breaker, renewals, stats,
and what happens when Redis does not answer."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time

import pytest
import redis.asyncio as aioredis

from mediacache.fetching.host_limiter import (
    BreakerPolicy,
    Grant,
    HostLimiter,
    HostLimiterUnavailable,
    Outcome,
    Wait,
)
from mediacache.fetching.host_rules import HostRule, parse_rule
from tests.fetching.conftest import REDIS_HOST, REDIS_PORT, LimiterFactory, eventually
from tests.support.processes import PrivateRedis

UNLIMITED = parse_rule("*=unlimited")


async def _grant(limiter: HostLimiter, host: str, rule: HostRule) -> Grant:
    decision = await limiter.acquire(host, rule)
    assert isinstance(decision, Grant), decision
    return decision


async def _wait(limiter: HostLimiter, host: str, rule: HostRule, reason: str) -> Wait:
    decision = await limiter.acquire(host, rule)
    assert isinstance(decision, Wait) and decision.reason == reason, decision
    return decision


async def _granted(limiter: HostLimiter, host: str, rule: HostRule) -> Grant | None:
    decision = await limiter.acquire(host, rule)
    return decision if isinstance(decision, Grant) else None


async def test_the_rate_allows_its_burst_then_spaces_requests(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter()
    rule = parse_rule("a.test=2/s:unlimited")
    first = await _grant(limiter, "a.test", rule)
    wait = await _wait(limiter, "a.test", rule, "rate")
    assert 0 < wait.retry_in_s <= 0.5
    grant = await eventually(lambda: _granted(limiter, "a.test", rule), timeout_s=2, interval_s=0.01)
    assert grant.granted_at_ms - first.granted_at_ms >= 499


async def test_waiters_are_told_to_come_back_one_slot_apart(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter()
    rule = parse_rule("a.test=10/s:unlimited")
    await _grant(limiter, "a.test", rule)
    started = time.monotonic()
    waits = [await _wait(limiter, "a.test", rule, "rate") for _ in range(5)]
    elapsed_s = time.monotonic() - started
    # Each is 100 ms after the one before, less the time that passed between the two calls.
    retries = [w.retry_in_s for w in waits]
    assert all(0 < b - a <= 0.101 for a, b in itertools.pairwise(retries)), retries
    assert 0.4 - elapsed_s - 0.002 <= retries[-1] - retries[0] <= 0.402, (retries, elapsed_s)


async def test_concurrency_counts_permits_until_released(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter()
    rule = parse_rule("c.test=unlimited:2")
    one, two = await _grant(limiter, "c.test", rule), await _grant(limiter, "c.test", rule)
    await _wait(limiter, "c.test", rule, "concurrency")
    await limiter.release(one, Outcome.ok())
    three = await _grant(limiter, "c.test", rule)
    assert len({one.permit_id, two.permit_id, three.permit_id}) == 3
    await _wait(limiter, "c.test", rule, "concurrency")
    # A concurrency wait does not use up a rate slot: the rate alone would still let one through.
    both = parse_rule("c.test=1/s:2")
    await _wait(limiter, "c.test", both, "concurrency")
    await limiter.release(two, Outcome.ok())
    await _grant(limiter, "c.test", both)


async def test_renewing_keeps_a_long_download_counted(make_limiter: LimiterFactory) -> None:
    limiter, other = make_limiter(permit_ttl_s=0.3), make_limiter(permit_ttl_s=0.3)
    rule = parse_rule("long.test=unlimited:1")
    grant = await _grant(limiter, "long.test", rule)
    async with limiter.renewing(grant):
        deadline = time.monotonic() + 0.8  # well past the TTL
        while time.monotonic() < deadline:
            await _wait(other, "long.test", rule, "concurrency")
            await asyncio.sleep(0.05)
    await limiter.release(grant, Outcome.ok())
    # Without renewals a permit lapses by itself, and its place can be taken.
    lapsing = await _grant(other, "long.test", rule)
    taker = await eventually(lambda: _granted(limiter, "long.test", rule), timeout_s=1)
    assert taker.granted_at_ms >= lapsing.expires_at_ms
    assert await other.renew(lapsing) is False, "no room to take the lapsed permit back"
    await limiter.release(taker, Outcome.ok())
    assert await other.renew(lapsing) is True, "room again: the lapsed permit is taken back"


async def test_a_throttled_answer_pauses_every_worker_until_the_time(make_limiter: LimiterFactory) -> None:
    worker_a, worker_b = make_limiter(), make_limiter()
    rule = parse_rule("p.test=100/s:10")
    grant = await _grant(worker_a, "p.test", rule)
    await worker_a.release(grant, Outcome.throttled(retry_after_s=0.5))
    for limiter in (worker_a, worker_b):
        wait = await _wait(limiter, "p.test", rule, "paused")
        assert 0 < wait.retry_in_s <= 0.5
    paused_until = (await worker_b.snapshot(["p.test"]))[0].paused_until
    assert paused_until is not None
    await _grant(worker_b, "other.test", rule)  # other hosts go on
    resumed = await eventually(lambda: _granted(worker_b, "p.test", rule), timeout_s=2)
    assert resumed.granted_at_ms >= paused_until * 1000 - 1


async def test_a_pause_is_capped_and_has_a_default(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter(max_pause_s=0.4, throttle_default_s=0.2)
    rule = parse_rule("p.test=unlimited")
    await limiter.release(await _grant(limiter, "p.test", rule), Outcome.throttled(retry_after_s=86400))
    assert (await _wait(limiter, "p.test", rule, "paused")).retry_in_s <= 0.4
    await limiter.release(await _grant(limiter, "q.test", rule), Outcome.throttled())
    assert 0 < (await _wait(limiter, "q.test", rule, "paused")).retry_in_s <= 0.2


async def test_the_breaker_opens_probes_once_and_closes(make_limiter: LimiterFactory) -> None:
    policy = BreakerPolicy(failures=3, window_s=10, open_s=0.3)
    worker_a, worker_b = make_limiter(breaker=policy), make_limiter(breaker=policy)
    rule = parse_rule("b.test=unlimited:10")
    for _ in range(2):
        await worker_a.release(await _grant(worker_a, "b.test", rule), Outcome.failure())
    # A healthy answer in between does not wipe the window: it counts failures, not streaks.
    await worker_a.release(await _grant(worker_a, "b.test", rule), Outcome.ok())
    await worker_a.release(await _grant(worker_a, "b.test", rule), Outcome.failure())

    wait = await _wait(worker_b, "b.test", rule, "open")
    assert 0 < wait.retry_in_s <= 0.3
    assert (await worker_b.snapshot(["b.test"]))[0].breaker == "open"
    await _grant(worker_b, "fine.test", rule)  # other hosts are not affected

    # Half-open: exactly one probe among many callers of two workers.
    probe = await eventually(lambda: _granted(worker_a, "b.test", rule), timeout_s=2)
    assert probe.probe
    others = await asyncio.gather(*(w.acquire("b.test", rule) for w in (worker_a, worker_b) * 4))
    assert all(isinstance(o, Wait) and o.reason == "open" for o in others), others
    assert (await worker_b.snapshot(["b.test"]))[0].breaker == "half_open"

    # The probe fails: open again.
    await worker_a.release(probe, Outcome.failure())
    await _wait(worker_b, "b.test", rule, "open")
    assert (await worker_b.snapshot(["b.test"]))[0].breaker_trips == 2

    # The next probe succeeds: closed, failures forgotten.
    probe = await eventually(lambda: _granted(worker_b, "b.test", rule), timeout_s=2)
    assert probe.probe
    await worker_b.release(probe, Outcome.ok())
    grants = [await _grant(worker_a, "b.test", rule) for _ in range(3)]
    assert not any(g.probe for g in grants)
    state = (await worker_a.snapshot(["b.test"]))[0]
    assert (state.breaker, state.recent_failures, state.permits_in_use) == ("closed", 0, 3)


async def test_a_probe_that_never_reports_is_replaced_after_its_ttl(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter(breaker=BreakerPolicy(failures=1, window_s=10, open_s=0.1), permit_ttl_s=0.3)
    rule = parse_rule("b.test=unlimited")
    await limiter.release(await _grant(limiter, "b.test", rule), Outcome.failure())
    lost = await eventually(lambda: _granted(limiter, "b.test", rule), timeout_s=2)
    assert lost.probe  # and its worker dies: never released
    await _wait(limiter, "b.test", rule, "open")
    replacement = await eventually(lambda: _granted(limiter, "b.test", rule), timeout_s=2)
    assert replacement.probe
    assert replacement.granted_at_ms >= lost.expires_at_ms
    # An abandoned probe (shutdown) gives no verdict: the next caller probes at once.
    await limiter.release(replacement, Outcome.abandoned())
    assert (await _grant(limiter, "b.test", rule)).probe


async def test_failures_older_than_the_window_do_not_count(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter(breaker=BreakerPolicy(failures=2, window_s=0.2, open_s=5))
    rule = parse_rule("w.test=unlimited")
    await limiter.release(await _grant(limiter, "w.test", rule), Outcome.failure())
    await eventually(lambda: _no_recent_failures(limiter, "w.test"), timeout_s=2)
    await limiter.release(await _grant(limiter, "w.test", rule), Outcome.failure())
    await _grant(limiter, "w.test", rule)
    await limiter.release(await _grant(limiter, "w.test", rule), Outcome.failure())
    await _wait(limiter, "w.test", rule, "open")


async def _no_recent_failures(limiter: HostLimiter, host: str) -> bool:
    return (await limiter.snapshot([host]))[0].recent_failures == 0


async def test_snapshot_lists_recent_hosts_with_their_state(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter()
    rule = parse_rule("*=20/s:8")
    held = [await _grant(limiter, "s1.test", rule) for _ in range(2)]
    await limiter.release(await _grant(limiter, "S2.Test.", rule), Outcome.ok())
    states = await limiter.snapshot()
    assert [s.host for s in states] == ["s2.test", "s1.test"]  # most recently used first
    s1, s2 = states[1], states[0]
    assert (s1.permits_in_use, s1.limits, s1.breaker, s1.granted_total) == (2, "20/s:8", "closed", 2)
    assert s1.rate_per_s > 0 and s1.last_seen is not None and s1.paused_until is None
    assert s2.permits_in_use == 0 and s2.average_hold_s is not None
    assert s1.waits_total["rate"] == 0
    never = (await limiter.snapshot(["never.test"]))[0]
    assert (never.permits_in_use, never.last_seen, never.breaker) == (0, None, "closed")
    for grant in held:
        await limiter.release(grant, Outcome.ok())


async def test_every_key_expires_by_itself(make_limiter: LimiterFactory, key_prefix: str) -> None:
    limiter = make_limiter()
    rule = parse_rule("*=1/s:1")
    held = await _grant(limiter, "k.test", rule)
    await _wait(limiter, "k.test", rule, "concurrency")
    await limiter.release(await _grant(limiter, "k2.test", rule), Outcome.failure())
    client = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    try:
        keys = [key async for key in client.scan_iter(f"{key_prefix}:*")]
        names = sorted(key.decode().removeprefix(key_prefix + ":") for key in keys)
        assert names == ["k.test:permits", "k.test:state", "k2.test:failures", "k2.test:state", "recent"]
        assert all([await client.pttl(key) > 0 for key in keys])
        await limiter.release(held, Outcome.ok())
    finally:
        await client.aclose()


async def test_redis_down_makes_callers_wait_and_logs_once(
        make_limiter: LimiterFactory, closed_port: int, caplog: pytest.LogCaptureFixture) -> None:
    limiter = make_limiter(port=closed_port)
    rule = parse_rule("d.test=1/s:1")
    with caplog.at_level(logging.WARNING, logger="mediacache.fetching.host_limiter"):
        decisions = [await limiter.acquire("d.test", rule) for _ in range(3)]
        await limiter.release(Grant("d.test", "x", rule, 0, 0), Outcome.failure())
        assert await limiter.renew(Grant("d.test", "x", rule, 0, 0)) is False
    assert decisions == [Wait("d.test", limiter.redis_retry_s, "redis_unavailable")] * 3
    assert len(caplog.records) == 1 and "Redis did not answer" in caplog.records[0].getMessage()
    with pytest.raises(HostLimiterUnavailable):
        await limiter.snapshot()


async def test_a_hung_redis_is_given_up_on_after_the_time_out(make_limiter: LimiterFactory, silent_port: int) -> None:
    limiter = make_limiter(port=silent_port, socket_timeout=None, quick_retry=False, timeout_s=0.3)
    started = time.monotonic()
    decision = await limiter.acquire("h.test", UNLIMITED)
    assert decision == Wait("h.test", limiter.redis_retry_s, "redis_unavailable")
    assert time.monotonic() - started < 1.0


async def test_with_redis_py_default_retries_an_outage_costs_at_most_the_time_out(
        make_limiter: LimiterFactory, closed_port: int) -> None:
    # redis-py 6+ retries a refused connection three times with backoff (seconds): the limiter's
    # own time-out bounds the wait of an acquire whatever the client's retry settings.
    limiter = make_limiter(port=closed_port, quick_retry=False, timeout_s=0.3)
    started = time.monotonic()
    assert (await limiter.acquire("h.test", UNLIMITED)).reason == "redis_unavailable"  # type: ignore[union-attr]
    assert time.monotonic() - started < 1.0


async def _permits(limiter: HostLimiter, host: str) -> int:
    return (await limiter.snapshot([host]))[0].permits_in_use


async def test_a_healthy_release_soon_goes_with_the_next_call(make_limiter: LimiterFactory) -> None:
    limiter, other = make_limiter(release_linger_s=30, spare_linger_s=30), make_limiter()
    rule = parse_rule("l.test=unlimited:4")
    first = await _grant(limiter, "l.test", rule)
    assert first.room_to_spare
    limiter.release_soon(first, Outcome.ok())
    # Not sent yet: the permit is still counted, which can only keep the host further below its limit.
    assert await _permits(other, "l.test") == 1
    second = await _grant(limiter, "l.test", rule)  # one call: the release first, then this acquire
    assert await _permits(other, "l.test") == 1
    assert second.permit_id != first.permit_id
    # A failure goes at once, without waiting for another call.
    limiter.release_soon(second, Outcome.failure())

    async def failure_recorded() -> bool:
        state = (await other.snapshot(["l.test"]))[0]
        return state.recent_failures == 1 and state.permits_in_use == 0
    await eventually(failure_recorded, timeout_s=2)
    # Closing sends what still waits.
    limiter.release_soon(await _grant(limiter, "l.test", rule), Outcome.ok())
    await limiter.aclose()
    assert await _permits(other, "l.test") == 0


async def test_a_release_waits_at_most_its_linger(make_limiter: LimiterFactory) -> None:
    limiter, other = make_limiter(release_linger_s=0.05, spare_linger_s=0.2), make_limiter()
    near = parse_rule("n.test=unlimited:1")  # its only permit: no room to spare, the short linger
    grant = await _grant(limiter, "n.test", near)
    assert not grant.room_to_spare
    started = time.monotonic()
    limiter.release_soon(grant, Outcome.ok())
    await eventually(lambda: _no_permits(other, "n.test"), timeout_s=2, interval_s=0.01)
    short_s = time.monotonic() - started
    spare = await _grant(limiter, "s.test", UNLIMITED)
    assert spare.room_to_spare
    started = time.monotonic()
    limiter.release_soon(spare, Outcome.ok())
    await eventually(lambda: _no_permits(other, "s.test"), timeout_s=2, interval_s=0.01)
    spare_s = time.monotonic() - started
    assert short_s < 0.19 <= spare_s < 1.5, (short_s, spare_s)


async def _no_permits(limiter: HostLimiter, host: str) -> bool:
    return await _permits(limiter, host) == 0


async def test_many_callers_at_once_share_a_call_and_each_get_their_own_answer(make_limiter: LimiterFactory) -> None:
    limiter, other = make_limiter(), make_limiter()
    rule = parse_rule("m.test=unlimited:5")
    decisions = await asyncio.gather(*(limiter.acquire("m.test", rule) for _ in range(8)),
                                     limiter.acquire("free.test", UNLIMITED))
    grants = [d for d in decisions[:8] if isinstance(d, Grant)]
    waits = [d for d in decisions[:8] if isinstance(d, Wait)]
    assert len(grants) == 5 and {w.reason for w in waits} == {"concurrency"} and len(waits) == 3
    assert isinstance(decisions[8], Grant) and decisions[8].host == "free.test"
    assert await _permits(other, "m.test") == 5


@pytest.mark.parametrize("turns", [0, 1, 2, 3, 5, 8])
async def test_a_cancelled_acquire_leaves_no_permit_behind(make_limiter: LimiterFactory, turns: int) -> None:
    # Cancelled before its call went out, during it, or after its answer: no permit stays held.
    limiter, other = make_limiter(), make_limiter()
    rule = parse_rule("x.test=unlimited:3")
    task = asyncio.create_task(limiter.acquire("x.test", rule))
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    if not task.cancelled():  # it had its answer before the cancellation
        await limiter.release(task.result(), Outcome.ok())  # type: ignore[arg-type]
    await limiter.flush()
    await limiter.flush()  # a grant answered to a caller already gone goes back in the next call
    assert await _permits(other, "x.test") == 0


async def test_a_connection_closed_by_redis_or_a_forgotten_script_costs_no_wait(
        make_limiter: LimiterFactory, private_redis: PrivateRedis) -> None:
    limiter = make_limiter(port=private_redis.port)
    admin = aioredis.Redis(host=REDIS_HOST, port=private_redis.port)
    try:
        await _grant(limiter, "c.test", UNLIMITED)
        await admin.client_kill_filter(_type="normal", skipme=True)  # the limiter's idle connection
        await _grant(limiter, "c.test", UNLIMITED)
        await admin.script_flush()
        await _grant(limiter, "c.test", UNLIMITED)
    finally:
        await admin.aclose()
