"""Fixtures of the Node interop tests: a private BullMQ prefix, Python bullmq workers, Node BullMQ.

These tests pin what Node BullMQ and Python bullmq do with raw bullmq Workers (so an upgrade of
either shows up); tests/test_node_interop.py drives the real CacheWorker. The suite's fixtures
(tests/conftest.py) apply here too; `bullmq_worker` is this folder's own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from bullmq import Queue, Worker

from tests.interop.support import QUEUE, REDIS


@pytest.fixture(autouse=True)
def _needs_node(node_bullmq: None) -> None:
    """Every test of this folder talks to Node BullMQ."""


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(**REDIS, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis: aioredis.Redis) -> AsyncIterator[str]:
    """A BullMQ prefix of this test alone; its keys are deleted afterwards."""
    name = f"mctest-interop-{uuid.uuid4().hex[:10]}"
    yield name
    keys = [key async for key in redis.scan_iter(match=f"{name}:*", count=500)]
    for start in range(0, len(keys), 500):
        await redis.delete(*keys[start:start + 500])


@pytest.fixture
async def queue(prefix: str) -> AsyncIterator[Queue]:
    q = Queue(QUEUE, {"connection": dict(REDIS), "prefix": prefix})
    yield q
    await q.close()


StartWorker = Callable[..., Awaitable[Worker]]


@pytest.fixture
async def bullmq_worker(prefix: str) -> AsyncIterator[StartWorker]:
    """Factory: a running Python bullmq Worker on the test's queue; closed at the end.

    `before_run(worker)` runs after construction and before `run()` (where the Node naming goes).
    """
    started: list[tuple[Worker, asyncio.Task[Any]]] = []

    async def start(processor: Callable[..., Awaitable[Any]], *, before_run: Callable[[Worker], Awaitable[Any]]
                    | None = None, **opts: Any) -> Worker:
        worker = Worker(QUEUE, processor, {"connection": dict(REDIS), "prefix": prefix, "autorun": False, **opts})
        if before_run is not None:
            await before_run(worker)
        started.append((worker, asyncio.create_task(worker.run())))
        return worker

    yield start
    for worker, task in started:
        if not worker.closed:
            await asyncio.wait_for(worker.close(), 10)
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
