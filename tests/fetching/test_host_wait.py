"""The waiting policy: short waits slept through in process, long ones handed back as a Wait."""

from __future__ import annotations

import time

from mediacache.fetching.host_limiter import Grant, Wait
from mediacache.fetching.host_rules import parse_rule
from mediacache.fetching.host_wait import SLEEP_MAX_S, acquire_or_wait, delayed_until_ms
from tests.fetching.conftest import LimiterFactory


async def test_a_short_wait_is_slept_through(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter()
    rule = parse_rule("s.test=10/s:unlimited")
    assert isinstance(await acquire_or_wait(limiter, "s.test", rule), Grant)
    started = time.monotonic()
    second = await acquire_or_wait(limiter, "s.test", rule)
    assert isinstance(second, Grant)
    assert time.monotonic() - started > 0.05, "it slept through the wait"


async def test_a_long_wait_is_returned_at_once(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter()
    rule = parse_rule("s.test=1/s:unlimited")
    assert isinstance(await acquire_or_wait(limiter, "s.test", rule), Grant)
    started = time.monotonic()
    wait = await acquire_or_wait(limiter, "s.test", rule)
    assert isinstance(wait, Wait) and wait.reason == "rate" and wait.retry_in_s > SLEEP_MAX_S
    assert time.monotonic() - started < 0.5, "without sleeping through it"


async def test_in_process_sleeping_is_bounded_in_total(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter()
    rule = parse_rule("s.test=2/s:unlimited")
    assert isinstance(await acquire_or_wait(limiter, "s.test", rule), Grant)
    wait = await acquire_or_wait(limiter, "s.test", rule, sleep_max_s=1.0, sleep_total_max_s=0.05)
    assert isinstance(wait, Wait) and 0 < wait.retry_in_s <= 0.5


def test_the_delay_timestamp() -> None:
    assert delayed_until_ms(Wait("h", 1.5, "rate"), now_s=1000.0) == 1_001_500
    spread = {delayed_until_ms(Wait("h", 2.0, "redis_unavailable"), now_s=1000.0) for _ in range(50)}
    assert min(spread) >= 1_002_000 and max(spread) <= 1_002_400 and len(spread) > 1
