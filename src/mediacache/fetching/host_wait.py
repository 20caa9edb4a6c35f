"""How a job waits for a busy host: a short wait in process, a longer one in BullMQ's delayed set.

The worker's side (measured with bullmq 3.4.4 on Redis 7; see tests/fetching/test_host_wait_bullmq.py):

    decision = await acquire_or_wait(limiter, host, rules.rule_for(host))
    if isinstance(decision, Wait):
        # Not a failed attempt, and the worker slot is free for other hosts' jobs meanwhile.
        await job.moveToDelayed(delayed_until_ms(decision), token)
        raise DelayedError(f"host {host}: {decision.reason}")

`job.moveToDelayed` passes `skipAttempt`, so attemptsMade stays where it was (only attemptsStarted,
`ats`, counts the start); DelayedError tells bullmq to leave the job where it now is.

Why short waits stay in process: an idle bullmq worker rounds every delay up to whole seconds (it
never reads the Redis version, so it blocks in whole seconds), unless the worker runs
`await worker.blockingRedisConnection.getRedisVersion()` before `run()`. And a job taken out and
put back costs three queue round trips. Under `SLEEP_MAX_S` a slot is better held for a moment.
"""

from __future__ import annotations

import asyncio
import random
import time

from mediacache.fetching.host_limiter import Grant, HostLimiter, Wait
from mediacache.fetching.host_rules import HostRule

# Waits up to this long are slept through in process (a quarter of bullmq's one-second granularity).
SLEEP_MAX_S = 0.25
# And at most this long in all, so a job never holds its slot long for one host.
SLEEP_TOTAL_MAX_S = 0.5
# Every job of every host is told the same wait when Redis is down; spreading their returns over
# a fifth more keeps them from all arriving at once when it is back.
UNAVAILABLE_JITTER = 0.2


async def acquire_or_wait(limiter: HostLimiter, host: str, rule: HostRule, *, sleep_max_s: float = SLEEP_MAX_S,
                          sleep_total_max_s: float = SLEEP_TOTAL_MAX_S) -> Grant | Wait:
    """A Grant, sleeping through short waits on the way; or the Wait to delay the job by."""
    slept_s = 0.0
    while True:
        decision = await limiter.acquire(host, rule)
        if isinstance(decision, Grant):
            return decision
        if (decision.reason == "redis_unavailable" or decision.retry_in_s > sleep_max_s
                or slept_s + decision.retry_in_s > sleep_total_max_s):
            return decision
        await asyncio.sleep(decision.retry_in_s)
        slept_s += decision.retry_in_s


def delayed_until_ms(wait: Wait, *, now_s: float | None = None) -> int:
    """The epoch-ms timestamp to give `job.moveToDelayed` for `wait`."""
    delay_s = wait.retry_in_s
    if wait.reason == "redis_unavailable":
        delay_s *= 1 + random.uniform(0, UNAVAILABLE_JITTER)
    return int(((time.time() if now_s is None else now_s) + delay_s) * 1000)
