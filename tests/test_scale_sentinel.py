"""Redis failover through Sentinel: a primary, a replica and three Sentinels on 127.0.0.1; 500 assets
through two workers; the primary SIGKILLed mid-run. Every asset ends CACHED, downloaded once, with one
stored object and one completed job that cached it; jobs the old primary took with it come back
through reconcile. The figures are printed (run with -s): SENTINEL-FAILOVER ..."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import pytest

from mediacache.domain import CacheStatus
from mediacache.errors import QueueUnavailableError
from mediacache.service import MediaCache
from mediacache.worker import CacheWorker
from tests.scale.servers import SentinelCluster
from tests.support.origin import Origin
from tests.support.scale_plugin import SCALE_REDIS_PASSWORD, SCALE_SENTINEL_PASSWORD
from tests.support.services import SettingsFactory
from tests.support.waiting import wait_until

ASSETS = 500
LOST = 20  # added after replication is cut: acknowledged by the primary only, gone with it
KILL_AFTER = 150  # completions before the primary is killed
RECONCILE_INTERVAL_S = 1.0
LEASE_S = 3.0  # reconcile requeues an asset untouched for max(interval, 2 * lease) = 6 s


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_jobs_survive_a_primary_kill_and_lost_ones_come_back_through_reconcile(
        make_settings: SettingsFactory, sentinels: SentinelCluster, origin: Origin) -> None:
    settings = make_settings(
        redis_sentinels=",".join(f"{h}:{p}" for h, p in sentinels.sentinel_addrs),
        redis_sentinel_master=sentinels.master_name, redis_password=SCALE_REDIS_PASSWORD,
        redis_sentinel_password=SCALE_SENTINEL_PASSWORD,
        reconcile_interval_s=RECONCILE_INTERVAL_S, lease_s=LEASE_S)
    run = uuid.uuid4().hex[:8]
    urls = [origin.url(f"/media/{i}.jpg?size={1500 + i}&run={run}") for i in range(ASSETS)]
    completions: list[tuple[float, str, str]] = []  # (monotonic time, job id, outcome)

    def on_completed(job: Any, result: Any, *_: Any) -> None:
        # bullmq handlers must be plain functions that never raise.
        try:
            completions.append((time.monotonic(), str(job.id), str((result or {}).get("status"))))
        except Exception:
            pass

    caches = [MediaCache(settings) for _ in range(3)]  # the producer's, and one per worker
    workers = [CacheWorker(c, concurrency=8) for c in caches[1:]]
    producer = caches[0]
    try:
        ids = await producer.cache_images(urls[:ASSETS - LOST])
        for w in workers:
            await w.start()
            assert w._worker is not None
            w._worker.on("completed", on_completed)
        async def enough_done() -> bool:
            return len(completions) >= KILL_AFTER
        await wait_until(enough_done, what=f"{KILL_AFTER} completions", timeout_s=30, interval_s=0.01)

        # The last LOST assets reach the primary only, and sit at the tail of a long queue.
        sentinels.cut_replication()
        lost_ids = await producer.cache_images(urls[ASSETS - LOST:])
        failover = await asyncio.to_thread(sentinels.kill_primary)
        t_kill = failover["t_kill"]
        done_at_kill = len(completions)
        states = await _job_states_after_failover(producer, lost_ids)
        assert set(states.values()) == {"missing"}, states

        all_ids = ids + lost_ids

        async def all_cached() -> bool:
            return (await producer.cache_stats()).cached == ASSETS
        await wait_until(all_cached, what=f"all {ASSETS} assets CACHED after the failover", timeout_s=40)
        t_all = time.monotonic()
        for asset_id in lost_ids:
            rec = await producer.get_asset(asset_id)
            assert rec is not None and rec.status is CacheStatus.CACHED
    finally:
        for w in workers:
            await w.stop(grace_s=5)
        for c in caches:
            await c.close()

    # Completions between the kill and the promotion were answered by the old primary just before
    # it died (the replica refuses writes until it is promoted): the new primary's first is after.
    first_after = min(t for t, _, _ in completions if t > failover["t_promoted"])
    lost_cached_at = max(t for t, job_id, status in completions if status == "cached" and
                         uuid.UUID(job_id) in set(lost_ids))
    print(f"\nSENTINEL-FAILOVER assets={ASSETS} completed_before_kill={done_at_kill} "
          f"promotion_s={failover['failover_s']:.2f} kill_to_first_completion_on_new_primary_s="
          f"{first_after - t_kill:.2f} kill_to_lost_jobs_cached_via_reconcile_s={lost_cached_at - t_kill:.2f} "
          f"kill_to_all_cached_s={t_all - t_kill:.2f} completions={len(completions)}")

    downloads = Counter(p.split("?")[0] for _, p in list(origin.requests) if f"run={run}" in p)
    assert len(downloads) == ASSETS and set(downloads.values()) == {1}, downloads.most_common(3)
    per_job = Counter(job_id for _, job_id, _ in completions)
    print(f"SENTINEL-FAILOVER outcomes={Counter(status for _, _, status in completions)} "
          f"completions_per_job={Counter(per_job.values())}")
    assert set(per_job) == {str(i) for i in all_ids}
    # A completion the old primary acknowledged and did not pass to the replica is lost with it:
    # the new primary still has that job active, and delivers it again once it stalls. That
    # delivery finds its asset CACHED and ends as "skipped", downloading and storing nothing, so
    # each job is done (downloaded, stored, recorded) once, whatever the number of its deliveries.
    cached_per_job = Counter(job_id for _, job_id, status in completions if status == "cached")
    assert set(cached_per_job.values()) <= {1}, cached_per_job.most_common(3)
    assert {status for _, job_id, status in completions if per_job[job_id] > 1} <= {"cached", "skipped"}
    objects = Counter(p.parent.name for p in (settings.objects_dir / "media").glob("*/*"))
    assert len(objects) == ASSETS and set(objects.values()) == {1}
    # The failover itself is Sentinel's timers (down-after 1000 ms); the worker follows at once.
    assert first_after - t_kill < failover["failover_s"] + 5


async def _job_states_after_failover(cache: MediaCache, ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The jobs of `ids` as the new primary knows them (the producer fails fast while it moves)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return await cache.backends.queue.job_states(ids)
        except QueueUnavailableError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
