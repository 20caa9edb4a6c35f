"""`processedOn` earlier than `timestamp`: which side stamps what.

`timestamp` is the producer's clock when it builds the job (Node job.js: `opts.timestamp ?
opts.timestamp : Date.now()`; Python job.py: `opts.get("timestamp", round(time.time() * 1000))`).
`processedOn` is the worker's clock when it builds the moveToActive call (Python scripts.py
`Scripts.moveToActive`: `timestamp = round(time.time() * 1000)`, passed as ARGV[2] and written by
prepareJobForProcessing.lua; Node does the same with `Date.now()`). Redis TIME is never used. A call
that waits between being stamped and reaching Redis can take a job added in between, and stamps it
with the earlier time: on one host that is event-loop lag, not clock skew (measure_processed_on.py).
"""

from __future__ import annotations

import asyncio
import time
import types
import uuid
from typing import Any

import bullmq.job
import bullmq.scripts

from tests.interop.support import JOB_NAME, QUEUE, run_node, wait_until

HOUR_MS = 3600 * 1000


def _clock_shifted_by(shift_ms: int) -> types.SimpleNamespace:
    return types.SimpleNamespace(time=lambda: time.time() + shift_ms / 1000)


async def _ran(queue: Any, job_id: str) -> bool:
    return await queue.getJobState(job_id) == "completed"


async def _noop(job: Any, token: str) -> None:
    return None


async def test_processed_on_is_the_python_workers_clock(prefix, queue, redis, bullmq_worker, monkeypatch):
    monkeypatch.setattr(bullmq.scripts, "time", _clock_shifted_by(-HOUR_MS))  # the worker only
    added = await run_node(prefix, "add", name=JOB_NAME, data={}, opts={})
    await bullmq_worker(_noop)
    await wait_until(lambda: _ran(queue, added["id"]), what="the job to run")
    timestamp, processed_on = map(int, await redis.hmget(f"{prefix}:{QUEUE}:{added['id']}", "timestamp", "processedOn"))
    assert timestamp == added["timestamp"]  # Node's Date.now() in the Job constructor
    assert -HOUR_MS - 5000 < processed_on - timestamp < -HOUR_MS + 5000


async def test_timestamp_is_the_producers_own_value(prefix, queue, redis, monkeypatch):
    added = await run_node(prefix, "add", name=JOB_NAME, data={}, opts={"timestamp": 1_000_000})
    assert await redis.hget(f"{prefix}:{QUEUE}:{added['id']}", "timestamp") == "1000000"

    monkeypatch.setattr(bullmq.job, "time", _clock_shifted_by(HOUR_MS))  # a Python producer's clock
    job = await queue.add(JOB_NAME, {}, {})
    stored = int(await redis.hget(f"{prefix}:{QUEUE}:{job.id}", "timestamp"))
    assert stored == job.timestamp and HOUR_MS - 5000 < stored - int(time.time() * 1000) < HOUR_MS + 5000


async def test_a_delayed_move_to_active_stamps_a_job_added_after_it_as_processed_before_it(
        prefix, queue, redis, bullmq_worker):
    """What a busy event loop does, made deterministic: the worker's moveToActive is stamped, then
    held back (as behind the single connection's lock, or another job's CPU work) while a Node
    producer adds a job; when the call reaches Redis it takes that job with the older stamp."""
    held = asyncio.Event()
    release = asyncio.Event()

    async def hold(worker: Any) -> None:
        real = worker.scripts.commands["moveToActive"]

        async def held_back(keys: Any = None, args: Any = None, client: Any = None) -> Any:
            if not release.is_set():
                held.set()
                await release.wait()
            return await real(keys=keys, args=args, client=client)
        worker.scripts.commands["moveToActive"] = held_back

    await bullmq_worker(_noop, concurrency=1, before_run=hold)
    await asyncio.wait_for(held.wait(), 10)
    stamped_ms = round(time.time() * 1000)  # rounded as bullmq rounds its stamp
    await asyncio.sleep(0.02)  # a lag the size of the one reported (17 ms)
    added = await run_node(prefix, "add", name=JOB_NAME, data={}, opts={"jobId": str(uuid.uuid4())})
    release.set()
    await wait_until(lambda: _ran(queue, added["id"]), what="the job to run")
    timestamp, processed_on = map(int, await redis.hmget(f"{prefix}:{QUEUE}:{added['id']}", "timestamp", "processedOn"))
    assert processed_on <= stamped_ms < timestamp
    assert processed_on - timestamp <= -20

