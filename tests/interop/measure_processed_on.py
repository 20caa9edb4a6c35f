"""Measures how often, and by how much, a Python bullmq worker stamps `processedOn` before the job's
`timestamp`, against a Node producer on the same host (so on one clock). Run by hand:

    PYTHONPATH=src .venv/bin/python -m tests.interop.measure_processed_on [JOBS]

For each (concurrency, milliseconds of synchronous work per job, connection) it prints the smallest
`processedOn - timestamp` and how many jobs had it negative. "single" is what the project passes (a
dict: bullmq makes a single-connection client, so concurrent commands wait for each other); "pooled"
hands bullmq a ready redis-py client with a connection pool, which shows where the wait comes from
(it is not a proposal: the worker's connections then share one pool and one client name).
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from typing import Any

import redis.asyncio as aioredis
from bullmq import Worker

from tests.interop.support import JOB_NAME, QUEUE, REDIS, run_node


async def measure(concurrency: int, block_ms: int, jobs: int, pooled: bool) -> tuple[int, int]:
    prefix = f"mctest-interop-measure-{uuid.uuid4().hex[:8]}"
    client = aioredis.Redis(**REDIS, decode_responses=True)
    done = 0
    all_done = asyncio.Event()

    async def process(job: Any, token: str) -> None:
        nonlocal done
        time.sleep(block_ms / 1000)  # CPU work on the event loop: hashing, sniffing, pyvips
        done += 1
        if done == jobs:
            all_done.set()

    connection: Any = aioredis.Redis(**REDIS, decode_responses=True) if pooled else dict(REDIS)
    worker = Worker(QUEUE, process, {"connection": connection, "prefix": prefix, "concurrency": concurrency,
                                     "autorun": False})
    task = asyncio.create_task(worker.run())
    try:
        added = await run_node(prefix, "add-many", 120, name=JOB_NAME, data={}, opts={}, count=jobs, intervalMs=3)
        await asyncio.wait_for(all_done.wait(), 120)
        gaps = []
        for item in added["added"]:
            ts, po = await client.hmget(f"{prefix}:{QUEUE}:{item['id']}", "timestamp", "processedOn")
            gaps.append(int(po) - int(ts))
        return min(gaps), sum(g < 0 for g in gaps)
    finally:
        await worker.close()
        await task
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        if pooled:
            await connection.aclose()


async def main(jobs: int) -> None:
    header = f"{'concurrency':>11} {'block ms':>8} {'connection':>10} {'min gap ms':>10} {'negative':>9}"
    print(f"{header}  (of {jobs} jobs)")
    for concurrency, block_ms, pooled in [(1, 0, False), (1, 20, False), (20, 0, False), (20, 20, False),
                                          (50, 5, False), (20, 0, True), (20, 20, True)]:
        smallest, negative = await measure(concurrency, block_ms, jobs, pooled)
        kind = "pooled" if pooled else "single"
        print(f"{concurrency:>11} {block_ms:>8} {kind:>10} {smallest:>10} {negative:>9}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
