"""Finishing a job fetches the next in the same call: fewer Redis round trips, no job left stranded."""

from __future__ import annotations

import uuid
from typing import Any

from mediacache.domain import CacheStatus
from mediacache.service import MediaCache
from tests.support.origin import Origin
from tests.support.services import WorkerFactory
from tests.support.waiting import wait_until


async def _all_cached(cache: MediaCache, ids: list[uuid.UUID]) -> bool:
    for asset_id in ids:
        rec = await cache.get_asset(asset_id)
        if rec is None or rec.status is not CacheStatus.CACHED:
            return False
    return True


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
    await wait_until(lambda: _all_cached(cache, ids), timeout_s=60)
    # Without chaining every job is one moveToActive (40); with it, each slot fetches separately
    # only when a finishing call brought nothing (the start, the empty queue at the end).
    assert separate[0] <= 8, separate[0]
    stats = await cache.backends.queue.stats()
    assert stats.completed == 40 and stats.active == 0


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
    await wait_until(lambda: _all_cached(cache, ids), timeout_s=90)
