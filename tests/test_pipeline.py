"""End to end on real Redis, SQLite and PostgreSQL, local storage and a real HTTP origin."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from mediacache.domain import CacheStatus
from mediacache.service import MediaCache
from tests.support.assets import all_in
from tests.support.origin import Origin, sha256_of
from tests.support.s3_plugin import s3_settings_overrides
from tests.support.services import SettingsFactory, WorkerFactory
from tests.support.waiting import wait_until


async def _settled(cache: MediaCache, ids: list[uuid.UUID]) -> bool:
    return await all_in(cache, ids, CacheStatus.CACHED, CacheStatus.FAILED)


@pytest.fixture(params=["local", "s3"])
def make_settings(request: pytest.FixtureRequest, make_settings: SettingsFactory) -> SettingsFactory:
    """The end-to-end tests run on local storage and on a real S3 server (SeaweedFS)."""
    if request.param == "local":
        return make_settings
    overrides = s3_settings_overrides(request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket"))
    return lambda **kwargs: make_settings(**{**overrides, **kwargs})


async def _stored_bytes(cache: MediaCache, key: str) -> bytes:
    return b"".join([chunk async for chunk in cache.backends.store.open_stream(key)])


async def _stored_keys(cache: MediaCache) -> list[str]:
    return [info.key async for info in cache.backends.store.list_keys("media/")]


async def test_fifty_urls_end_cached_with_the_origins_bytes(
        cache: MediaCache, start_worker: WorkerFactory, origin: Origin) -> None:
    sizes = [1000 + 997 * i for i in range(50)]
    urls = [origin.url(f"/media/{i}.jpg?size={size}") for i, size in enumerate(sizes)]
    ids = await cache.cache_images(urls)
    assert len(set(ids)) == 50
    assert (await cache.cache_stats()).pending == 50

    await start_worker(concurrency=8)
    await wait_until(lambda: _settled(cache, ids), what="50 assets to settle")

    for i, (asset_id, size) in enumerate(zip(ids, sizes, strict=True)):
        rec = await cache.get_asset(asset_id)
        assert rec is not None and rec.status is CacheStatus.CACHED, rec
        assert rec.original_url == urls[i]
        assert rec.size_bytes == size
        assert rec.sha256 == sha256_of("media", i, size)
        assert rec.content_type == "image/jpeg"
        assert rec.attempts == 1 and rec.cached_at is not None and rec.error is None
        assert rec.cache_key is not None and rec.cache_key.startswith(f"media/{asset_id}/")
        assert hashlib.sha256(await _stored_bytes(cache, rec.cache_key)).hexdigest() == rec.sha256

    stats = await cache.cache_stats()
    assert (stats.cached, stats.failed, stats.pending, stats.downloading, stats.total) == (50, 0, 0, 0, 50)
    assert stats["cached"] == 50 and dict(stats)["total"] == 50
    q = await cache.queue_stats()
    assert q.waiting == 0 and q.active == 0 and q.failed == 0


async def test_origin_failing_twice_then_answering_ends_cached_after_three_attempts(
        cache: MediaCache, start_worker: WorkerFactory, origin: Origin) -> None:
    path = f"/flaky/{uuid.uuid4().hex}.jpg"
    asset_id = await cache.cache_image(origin.url(path + "?fail=2"))
    await start_worker()
    await wait_until(lambda: _settled(cache, [asset_id]), timeout_s=30, what="the flaky asset")
    rec = await cache.get_asset(asset_id)
    assert rec is not None and rec.status is CacheStatus.CACHED
    assert rec.attempts == 3 and rec.error is None
    # The backoff is exponential from 1 s: the retries must run on time, not minutes late
    # (the socket time-out trap of bullmq with redis-py 8).
    hits = origin.hits(path)
    assert len(hits) == 3
    assert 0.8 <= hits[1] - hits[0] < 6, hits
    assert 1.6 <= hits[2] - hits[1] < 8, hits


async def test_origin_always_failing_ends_failed_after_three_attempts_with_the_error(
        cache: MediaCache, start_worker: WorkerFactory, origin: Origin) -> None:
    path = f"/flaky/{uuid.uuid4().hex}.jpg"
    asset_id = await cache.cache_image(origin.url(path + "?fail=1000&status=500"))
    await start_worker()
    await wait_until(lambda: _settled(cache, [asset_id]), timeout_s=30, what="the failing asset")
    rec = await cache.get_asset(asset_id)
    assert rec is not None and rec.status is CacheStatus.FAILED
    assert rec.attempts == 3
    assert rec.error is not None and "500" in rec.error and rec.error_kind == "transient"
    assert len(origin.hits(path)) == 3
    stats = await cache.cache_stats()
    assert stats.failed == 1 and stats.failed_by_kind == {"transient": 1}
    await wait_until(lambda: _queue_failed(cache, 1), what="the job to be failed in BullMQ")
    # The stored URL of a failed asset is its original.
    assert await cache.get_url(asset_id) == origin.url(path + "?fail=1000&status=500")


async def _queue_failed(cache: MediaCache, n: int) -> bool:
    return (await cache.queue_stats()).failed == n


async def test_not_found_is_final_after_one_attempt(
        cache: MediaCache, start_worker: WorkerFactory, origin: Origin) -> None:
    asset_id = await cache.cache_image(origin.url("/status/404"))
    await start_worker()
    await wait_until(lambda: _settled(cache, [asset_id]), what="the 404 asset")
    rec = await cache.get_asset(asset_id)
    assert rec is not None and rec.status is CacheStatus.FAILED
    assert rec.attempts == 1 and rec.error_kind == "not_found"


async def test_retry_failed_requeues_and_the_asset_can_then_be_cached(
        cache: MediaCache, start_worker: WorkerFactory, origin: Origin) -> None:
    path = f"/flaky/{uuid.uuid4().hex}.jpg"
    # 404 three times: the first round fails at once (not_found is final), the retry succeeds
    # only after the origin stops failing.
    asset_id = await cache.cache_image(origin.url(path + "?fail=1&status=404"))
    ok_id = await cache.cache_image(origin.url("/media/7.jpg?size=3000"))
    await start_worker()
    await wait_until(lambda: _settled(cache, [asset_id, ok_id]), what="first round")
    assert (await cache.cache_stats()).failed == 1

    assert await cache.retry_failed() == 1
    assert await cache.retry_failed() == 0  # nothing FAILED is left to retry
    await wait_until(lambda: _settled(cache, [asset_id]), what="the retried asset")
    rec = await cache.get_asset(asset_id)
    # Attempts count the current try: retry_failed starts the count again (see test_messages).
    assert rec is not None and rec.status is CacheStatus.CACHED and rec.attempts == 1
    stats = await cache.cache_stats()
    assert (stats.cached, stats.failed) == (2, 0)


async def test_cleanup_removes_old_assets_and_their_files(
        cache: MediaCache, start_worker: WorkerFactory, origin: Origin) -> None:
    urls = [origin.url(f"/media/{i}.jpg?size=5000") for i in range(4)]
    ids = await cache.cache_images(urls)
    await start_worker()
    await wait_until(lambda: _settled(cache, ids), what="assets to cache")
    keys = sorted([(await cache.get_asset(i)).cache_key for i in ids])  # type: ignore[union-attr,type-var]
    assert sorted(await _stored_keys(cache)) == keys

    assert await cache.cleanup(days=1) == 0  # nothing is a day old yet
    assert sorted(await _stored_keys(cache)) == keys

    assert await cache.cleanup(days=0) == 4
    assert await _stored_keys(cache) == []
    assert await cache.get_asset(ids[0]) is None
    assert (await cache.cache_stats()).total == 0
    # A removed id resolves to the original URL the caller passes, or to nothing.
    assert await cache.get_url(ids[0], urls[0]) == urls[0]
    assert await cache.get_url(ids[0]) is None
