"""Crash safety: a killed worker, Redis going away or losing its data, orphans and missing objects."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from mediacache.domain import CacheStatus
from mediacache.errors import QueueUnavailableError
from mediacache.service import MediaCache
from tests.support.assets import all_in
from tests.support.origin import Origin, sha256_of
from tests.support.processes import PrivateRedis, spawn_worker, wait_for_log
from tests.support.services import REDIS_HOST, REDIS_PORT, SettingsFactory, WorkerFactory
from tests.support.waiting import wait_until

FAST_RECOVERY = {"lock_duration_ms": 2000, "lease_s": 3.0}


async def _status(mc: MediaCache, asset_id: uuid.UUID) -> CacheStatus | None:
    rec = await mc.get_asset(asset_id)
    return None if rec is None else rec.status


def _objects_of(mc: MediaCache, asset_id: uuid.UUID) -> list[Path]:
    folder = mc.settings.objects_dir / "media" / str(asset_id)
    return sorted(p for p in folder.glob("*")) if folder.exists() else []


async def test_worker_killed_mid_download_is_taken_over_and_nothing_stays_downloading(
        make_settings: SettingsFactory, origin: Origin, tmp_path: Path) -> None:
    settings = make_settings(**FAST_RECOVERY)
    env = {"MEDIACACHE_LOCK_DURATION_MS": "2000", "MEDIACACHE_LEASE_S": "3"}
    size = 6 * 1024 * 1024
    async with MediaCache(settings) as mc:
        asset_id = await mc.cache_image(origin.url(f"/slow/5.mp4?size={size}&chunk=131072&delay_ms=60"))
        first = spawn_worker(settings, tmp_path / "a.log", **env)
        try:
            await wait_until(lambda: _is(mc, asset_id, CacheStatus.DOWNLOADING), what="the first download")
            await wait_until(lambda: _has_progress(mc), timeout_s=10, what="a partial upload")
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            if first.poll() is None:
                first.kill()
        rec = await mc.get_asset(asset_id)
        assert rec is not None and rec.status is CacheStatus.DOWNLOADING  # the dead worker's lease

        second = spawn_worker(settings, tmp_path / "b.log", **env)
        try:
            await wait_for_log(tmp_path / "b.log", "worker ready", second)
            await wait_until(lambda: _is(mc, asset_id, CacheStatus.CACHED), timeout_s=60, what="the takeover")
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
        rec = await mc.get_asset(asset_id)
        assert rec is not None and rec.attempts == 2 and rec.sha256 == sha256_of("big", 5, size)
        objects = _objects_of(mc, asset_id)
        assert [p.relative_to(settings.objects_dir).as_posix() for p in objects] == [rec.cache_key]
        assert hashlib.sha256(objects[0].read_bytes()).hexdigest() == rec.sha256
        stats = await mc.cache_stats()
        assert (stats.downloading, stats.pending, stats.cached) == (0, 0, 1)
        report = await mc.collect_garbage(dry_run=True)
        assert report.orphan_objects == [] and report.dangling_rows == []


async def _is(mc: MediaCache, asset_id: uuid.UUID, status: CacheStatus) -> bool:
    return await _status(mc, asset_id) is status


async def _has_progress(mc: MediaCache) -> bool:
    tmp = mc.settings.objects_dir / ".tmp"
    return tmp.exists() and any(p.stat().st_size > 0 for p in tmp.glob("*.part"))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_redis_outage_refuses_new_work_clearly_and_finishes_everything_after(
        make_settings: SettingsFactory, private_redis: PrivateRedis, origin: Origin,
        start_worker: WorkerFactory) -> None:
    settings = make_settings(redis_port=private_redis.port, **FAST_RECOVERY)
    async with MediaCache(settings) as mc:
        urls = [origin.url(f"/slow/{i}.mp4?size=262144&chunk=65536&delay_ms=40") for i in range(24)]
        ids = await mc.cache_images(urls)
        await start_worker(mc, concurrency=4)

        async def some_cached() -> bool:
            return (await mc.cache_stats()).cached >= 4
        await wait_until(some_cached, what="the first assets")

        private_redis.stop()
        with pytest.raises(QueueUnavailableError):
            await mc.cache_image(origin.url("/media/99.jpg?size=1000"))
        # The worker keeps running through the outage; what it holds finishes into the database.
        private_redis.start()
        late = await asyncio.wait_for(mc.cache_image(origin.url("/media/98.jpg?size=1000")), 15)
        await wait_until(lambda: all_in(mc, [*ids, late]), timeout_s=90, what="every asset after the outage")
        stats = await mc.cache_stats()
        assert (stats.cached, stats.total, stats.downloading, stats.pending) == (25, 25, 0, 0)


async def test_lost_jobs_are_requeued_by_reconciliation(
        make_settings: SettingsFactory, origin: Origin, start_worker: WorkerFactory, queue_prefix: str) -> None:
    settings = make_settings(reconcile_interval_s=1.0, lease_s=1.0)
    async with MediaCache(settings) as mc:
        ids = await mc.cache_images([origin.url(f"/media/{i}.jpg?size=3000") for i in range(12)])
        # Redis loses everything (a restart without persistence, a FLUSHDB): only our keys here.
        client = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT)
        keys = [k async for k in client.scan_iter(match=f"{queue_prefix}:*")]
        await client.delete(*keys)
        await client.aclose()
        assert (await mc.queue_stats()).waiting == 0

        report = await mc.reconcile(min_age_s=0)
        assert report.requeued == 12
        assert (await mc.queue_stats()).waiting == 12
        assert (await mc.reconcile(min_age_s=0)).requeued == 0  # live jobs are left alone

        client = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT)
        await client.delete(*[k async for k in client.scan_iter(match=f"{queue_prefix}:*")])
        await client.aclose()
        # This time nobody runs the command: the workers' periodic reconciliation finds them.
        await start_worker(mc)
        await wait_until(lambda: all_in(mc, ids), timeout_s=60, what="periodic reconciliation")


async def test_gc_finds_orphans_and_missing_objects_and_reconcile_repairs(
        cache: MediaCache, start_worker: WorkerFactory, origin: Origin) -> None:
    ids = await cache.cache_images([origin.url(f"/media/{i}.jpg?size=2000") for i in range(3)])
    await start_worker()
    await wait_until(lambda: all_in(cache, ids), what="three assets")

    async def chunks() -> object:
        yield b"orphan"
    stranger = f"media/{uuid.uuid4()}/deadbeef.jpg"
    loser = f"media/{ids[0]}/0123456789abcdef.jpg"
    legacy = "legacy/not-ours.jpg"
    for key in (stranger, loser, legacy):
        await cache.backends.store.put_stream(key, chunks())  # type: ignore[arg-type]
    gone = await cache.get_asset(ids[1])
    assert gone is not None and gone.cache_key is not None
    await cache.backends.store.delete(gone.cache_key)

    dry = await cache.collect_garbage(dry_run=True)
    assert sorted(dry.orphan_objects) == sorted([stranger, loser])
    assert dry.deleted_objects == 0 and dry.dangling_rows == [(str(ids[1]), gone.cache_key)]
    assert await cache.backends.store.head(stranger) is not None

    done = await cache.collect_garbage(dry_run=False)
    assert done.deleted_objects == 2
    assert await cache.backends.store.head(stranger) is None and await cache.backends.store.head(loser) is None
    assert await cache.backends.store.head(legacy) is not None  # legacy keys are never collected
    for asset_id in (ids[0], ids[2]):
        rec = await cache.get_asset(asset_id)
        assert rec is not None and await cache.backends.store.head(rec.cache_key or "") is not None

    report = await cache.reconcile(requeue_missing=True)
    assert report.missing_objects == [(str(ids[1]), gone.cache_key)] and report.requeued_missing == 1
    await wait_until(lambda: all_in(cache, ids), what="the repaired asset")
    assert (await cache.collect_garbage(dry_run=True)).dangling_rows == []


async def test_an_expired_lease_with_no_live_job_is_taken_over(
        cache: MediaCache, start_worker: WorkerFactory, origin: Origin, queue_prefix: str) -> None:
    asset_id = await cache.cache_image(origin.url("/media/4.jpg?size=4000"))
    # A worker claimed it and died; its lease has run out and Redis lost the job.
    assert await cache.backends.assets.claim(asset_id, "0" * 32, lease_s=0.001) is not None
    client = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    await client.delete(*[k async for k in client.scan_iter(match=f"{queue_prefix}:*")])
    await client.aclose()
    assert await _is(cache, asset_id, CacheStatus.DOWNLOADING)

    report = await cache.reconcile(min_age_s=0)
    assert report.requeued == 1
    await start_worker()
    await wait_until(lambda: _is(cache, asset_id, CacheStatus.CACHED), what="the takeover of the dead lease")
    rec = await cache.get_asset(asset_id)
    assert rec is not None and rec.attempts == 2
    assert (await cache.cache_stats()).downloading == 0
