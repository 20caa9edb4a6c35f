"""SyncMediaCache: the Python API for synchronous code, shared by threads, on one loop of its own."""

from __future__ import annotations

import asyncio
import inspect
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

import mediacache
from mediacache import CacheStatus, MediaCache, MediaCacheError, SyncMediaCache
from mediacache.settings import Settings
from tests.support.origin import Origin
from tests.support.services import SettingsFactory, WorkerFactory
from tests.support.waiting import wait_until_sync

THREADS = 8
PER_THREAD = 3


def test_sync_api_is_exported_with_every_method_of_the_async_one() -> None:
    assert "SyncMediaCache" in mediacache.__all__
    public = {name for name in dir(MediaCache) if not name.startswith("_")
              and asyncio.iscoroutinefunction(getattr(MediaCache, name))}
    missing = sorted(name for name in public if not callable(getattr(SyncMediaCache, name, None)))
    assert missing == []
    # The same parameters too (names, kinds, defaults), but the progress callbacks, which would run
    # on the loop's thread: a keyword added to one must reach the other.
    def params(cls: type, name: str) -> list[tuple[str, object, object]]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(getattr(cls, name)).parameters.values()
                if not p.name.startswith("on_")]
    differing = sorted(name for name in public if params(SyncMediaCache, name) != params(MediaCache, name))
    assert differing == []


def _one_thread(sync: SyncMediaCache, origin: Origin, settings: Settings, index: int,
                start: threading.Barrier) -> list[uuid.UUID]:
    urls = [origin.url(f"/media/{index}.jpg?size={1000 + 10 * index + n}") for n in range(PER_THREAD)]
    start.wait(timeout=30)  # all threads call at once
    ids = sync.cache_images(urls)

    def cached() -> bool:
        records = [sync.get_asset(i) for i in ids]
        return all(r is not None and r.status is CacheStatus.CACHED for r in records)
    wait_until_sync(cached, what=f"thread {index}'s assets to be cached")
    resolved = sync.get_urls(ids, urls)
    assert all(u is not None and u.startswith(f"{settings.public_base_url}/files/media/") for u in resolved)
    assert sync.cache_stats().cached >= PER_THREAD
    return ids


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
async def test_eight_threads_share_one_sync_cache(make_settings: SettingsFactory, start_worker: WorkerFactory,
                                                  origin: Origin) -> None:
    await start_worker()
    settings = make_settings()
    start = threading.Barrier(THREADS)
    loop = asyncio.get_running_loop()
    with SyncMediaCache(settings) as sync, ThreadPoolExecutor(THREADS) as pool:
        results = await asyncio.gather(*(loop.run_in_executor(pool, _one_thread, sync, origin, settings, i, start)
                                         for i in range(THREADS)))
        all_ids = [i for ids in results for i in ids]
        assert len(set(all_ids)) == THREADS * PER_THREAD
        stats = await loop.run_in_executor(pool, sync.cache_stats)
        assert (stats.cached, stats.total) == (THREADS * PER_THREAD, THREADS * PER_THREAD)


def test_one_sync_cache_serves_separate_calls_threads_and_event_loops(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    sync = SyncMediaCache(settings)
    try:
        original = "https://example.com/cover.jpg"
        asset_id = sync.cache_image(original)
        # The calls a web application makes over its life: request after request, each from
        # whichever thread serves it, some from inside another event loop (asyncio.run).
        assert sync.get_url(asset_id) == original
        assert sync.cache_stats().pending == 1

        seen: list[str | None] = []
        thread = threading.Thread(target=lambda: seen.append(sync.get_url(asset_id)))
        thread.start()
        thread.join(30)
        assert seen == [original]

        async def inside_another_loop() -> int:
            return sync.queue_stats().waiting + sync.queue_stats().delayed

        for _ in range(3):
            assert asyncio.run(inside_another_loop()) == 1
            record = sync.get_asset(asset_id)
            assert record is not None and record.status is CacheStatus.PENDING
    finally:
        sync.close()
    sync.close()  # a second close is harmless
    with pytest.raises(MediaCacheError, match="closed"):
        sync.cache_stats()
