"""A job whose host is busy waits in BullMQ's delayed set: no attempt spent, no worker slot held,
and back on time once the worker reads the Redis version (bullmq 3.4.4 rounds to seconds otherwise)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from bullmq import Queue, Worker
from bullmq.custom_errors import DelayedError

from mediacache.fetching.host_limiter import Grant, HostLimiter, Outcome, Wait, key_prefix_for
from mediacache.fetching.host_rules import parse_host_limits
from mediacache.fetching.host_wait import acquire_or_wait, delayed_until_ms
from tests.fetching.conftest import REDIS_HOST, REDIS_PORT, LimiterFactory, eventually

CONNECTION = {"host": REDIS_HOST, "port": REDIS_PORT, "socket_timeout": 30.0, "socket_connect_timeout": 5.0}
RULES = parse_host_limits("busy.test=unlimited:1,*=unlimited")
Processor = Callable[[Any, str], Awaitable[Any]]


@asynccontextmanager
async def _worker(prefix: str, processor: Processor, *, read_version: bool) -> AsyncIterator[Queue]:
    queue = Queue("media-cache", {"connection": CONNECTION, "prefix": prefix})
    worker = Worker("media-cache", processor, {"connection": CONNECTION, "prefix": prefix, "concurrency": 1,
                                               "autorun": False, "lockDuration": 5000})
    if read_version:
        # Without it bullmq 3.4.4 thinks Redis cannot block for fractions of a second.
        await worker.blockingRedisConnection.getRedisVersion()
    task = asyncio.create_task(worker.run())
    try:
        yield queue
    finally:
        await worker.close()
        await asyncio.wait({task}, timeout=5)
        await queue.close()


def _host_limited(limiter: HostLimiter, runs: dict[str, list[dict[str, float]]]) -> Processor:
    async def process(job: Any, token: str) -> str:
        host = job.data["host"]
        run: dict[str, float] = {"at": time.time(), "attemptsMade": job.attemptsMade}
        runs.setdefault(job.id, []).append(run)
        decision = await acquire_or_wait(limiter, host, RULES.rule_for(host))
        if isinstance(decision, Wait):
            run["due"] = delayed_until_ms(decision) / 1000
            await job.moveToDelayed(int(run["due"] * 1000), token)
            raise DelayedError(f"host {host}: {decision.reason}")
        await limiter.release(decision, Outcome.ok())
        return "done"

    return process


async def test_a_waiting_job_spends_no_attempt_and_frees_its_slot(
        key_prefix: str, make_limiter: LimiterFactory) -> None:
    # The limiter's keys sit beside the queue's, as in production.
    limiter = make_limiter(key_prefix=key_prefix_for(key_prefix))
    holder = make_limiter(key_prefix=key_prefix_for(key_prefix))
    held = await holder.acquire("busy.test", RULES.rule_for("busy.test"))
    assert isinstance(held, Grant)
    runs: dict[str, list[dict[str, float]]] = {}
    async with _worker(key_prefix, _host_limited(limiter, runs), read_version=True) as queue:
        await queue.add("cache-media", {"host": "busy.test"}, {"jobId": "waits", "attempts": 3})
        await queue.add("cache-media", {"host": "free.test"}, {"jobId": "free", "attempts": 3})

        async def free_done() -> bool:
            return await queue.getJobState("free") == "completed"

        # One worker slot, and the job behind the waiting one runs: the slot was free.
        await eventually(free_done, timeout_s=5)
        assert await queue.getJobState("waits") == "delayed"
        waiting = await queue.getJob("waits")
        assert waiting is not None and waiting.attemptsMade == 0

        await holder.release(held, Outcome.ok())

        async def waits_done() -> bool:
            return await queue.getJobState("waits") == "completed"

        await eventually(waits_done, timeout_s=5)
        done = await queue.getJob("waits")
        assert done is not None
        # The one real attempt is the only one counted, however often it waited.
        assert done.attemptsMade == 1 and done.attemptsStarted == len(runs["waits"]) >= 2
        assert all(run["attemptsMade"] == 0 for run in runs["waits"])


@pytest.mark.parametrize("read_version", [True, False])
async def test_how_late_a_short_delay_comes_back(key_prefix: str, read_version: bool) -> None:
    runs: list[float] = []
    delay_s = 0.3

    async def process(job: Any, token: str) -> None:
        runs.append(time.time())
        if len(runs) == 1:
            await job.moveToDelayed(int((runs[0] + delay_s) * 1000), token)
            raise DelayedError("host busy")

    async with _worker(key_prefix, process, read_version=read_version) as queue:
        await asyncio.sleep(0.2)  # the worker is idle, blocked on Redis, when the job arrives
        await queue.add("cache-media", {}, {"jobId": "short"})

        async def ran_twice() -> bool:
            return len(runs) >= 2

        await eventually(ran_twice, timeout_s=5)
    late_s = runs[1] - runs[0] - delay_s
    print(f"a {delay_s} s delay on an idle worker, read_version={read_version}: {late_s * 1000:.0f} ms late")
    if read_version:
        assert late_s < 0.4
    else:
        # bullmq 3.4.4 blocks in whole seconds: this fails once a release fixes it, and then
        # the getRedisVersion() call in the worker can go.
        assert late_s > 0.5
