"""Finishing a job fetches the next in the same call: fewer Redis round trips, no job left stranded."""

from __future__ import annotations

import asyncio
from typing import Any

from mediacache.service import MediaCache
from tests.support.assets import all_in
from tests.support.origin import Origin
from tests.support.services import WorkerFactory
from tests.support.waiting import wait_until


def _count_move_to_active(worker: Any) -> list[int]:
    """Counts the worker's separate fetches (bullmq's moveToActive) from now on."""
    calls = [0]
    move = worker.moveToActive

    async def counting(token: str) -> Any:
        calls[0] += 1
        return await move(token)

    worker.moveToActive = counting
    return calls


async def test_a_busy_queue_is_worked_through_with_few_separate_fetches(
        cache: MediaCache, origin: Origin, start_worker: WorkerFactory) -> None:
    ids = await cache.cache_images([origin.url(f"/media/{7100 + n}.jpg?size=2000") for n in range(40)])
    cw = await start_worker(concurrency=2)
    assert cw._worker is not None
    separate = _count_move_to_active(cw._worker)
    await wait_until(lambda: all_in(cache, ids), timeout_s=60)
    # Without chaining every job is one moveToActive (40); with it, each slot fetches separately
    # only when a finishing call brought nothing (the start, the empty queue at the end).
    assert separate[0] <= 8, separate[0]

    async def all_finished() -> bool:
        # A row is CACHED one Redis call before its job is moved to completed.
        stats = await cache.backends.queue.stats()
        return stats.completed == 40 and stats.active == 0

    await wait_until(all_finished, timeout_s=10, what="every job completed in BullMQ")


async def test_stopping_leaves_no_fetched_job_active(
        cache: MediaCache, origin: Origin, start_worker: WorkerFactory) -> None:
    # Slow downloads (about 0.3 s each) so that the stop comes while most jobs still wait.
    ids = await cache.cache_images(
        [origin.url(f"/slow/{7200 + n}.mp4?size=20000&chunk=10000&delay_ms=150") for n in range(30)])
    cw = await start_worker(concurrency=3)

    async def some_done() -> bool:
        return (await cache.backends.queue.stats()).completed >= 4

    await wait_until(some_done, timeout_s=60)
    await cw.stop(grace_s=10)
    stats = await cache.backends.queue.stats()
    # Every job is finished or back waiting: none was fetched by a finishing call and then dropped.
    assert stats.active == 0
    assert stats.completed + stats.waiting == len(ids), stats
    assert 4 <= stats.completed < len(ids)
    # And a new worker finishes the rest.
    await start_worker(concurrency=3)
    await wait_until(lambda: all_in(cache, ids), timeout_s=90)


async def test_a_job_fetched_as_the_stop_begins_is_finished_before_the_worker_closes(
        cache: MediaCache, origin: Origin, start_worker: WorkerFactory) -> None:
    # Slow downloads (about 0.3 s each), so the fetched job is still running when the close begins.
    ids = await cache.cache_images(
        [origin.url(f"/slow/{7300 + n}.mp4?size=20000&chunk=10000&delay_ms=150") for n in range(10)])
    cw = await start_worker(concurrency=1)
    worker = cw._worker
    assert worker is not None
    chained = worker.backend.moveToCompleted
    stopping: list[asyncio.Task[None]] = []

    async def closing() -> bool:
        return bool(worker.closing)

    async def finish_then_stop(*args: Any, **kwargs: Any) -> Any:
        done = await chained(*args, **kwargs)  # asked for the next job: the worker was not closing yet
        if not stopping:
            stopping.append(asyncio.create_task(cw.stop(grace_s=30)))
            await wait_until(closing, timeout_s=10, what="the close to begin")
        return done

    worker.backend.moveToCompleted = finish_then_stop
    await wait_until(lambda: _stopped(stopping), timeout_s=60, what="the worker to stop")
    stats = await cache.backends.queue.stats()
    # The job that came with the finishing call was worked to the end before the worker stopped.
    assert stats.active == 0, stats
    assert stats.completed == 2 and stats.waiting == len(ids) - 2, stats
    await start_worker(concurrency=2)
    await wait_until(lambda: all_in(cache, ids), timeout_s=60)


async def _stopped(tasks: list[asyncio.Task[None]]) -> bool:
    return bool(tasks) and tasks[0].done()
