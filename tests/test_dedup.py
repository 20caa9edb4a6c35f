"""Download once, store once: URL deduplication by source key, content deduplication by sha256 and size,
and the objects they share surviving cleanup, gc and the bucket check (local storage and SeaweedFS)."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest

from mediacache.domain import CacheStatus
from mediacache.service import MediaCache
from tests.support.origin import Origin, sha256_of
from tests.support.s3_plugin import s3_settings_overrides
from tests.support.services import SettingsFactory, WorkerFactory
from tests.support.waiting import wait_until


@pytest.fixture(params=["local", "s3"])
async def mc(request: pytest.FixtureRequest, make_settings: SettingsFactory) -> AsyncIterator[MediaCache]:
    """A cache on local storage or on a fresh SeaweedFS bucket."""
    overrides = {}
    if request.param == "s3":
        overrides = s3_settings_overrides(request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket"))
    cache = MediaCache(make_settings(**overrides))
    yield cache
    await cache.close()


def _n() -> int:
    """A media number no other test of the session uses, so origin hit counts are this test's own."""
    return random.randrange(10_000, 10_000_000)


async def _objects(cache: MediaCache) -> list[str]:
    return [info.key async for info in cache.backends.store.list_keys("media/")]


async def _fetch(cache: MediaCache, url: str) -> bytes:
    """The bytes behind a resolved URL: over HTTP for S3 (the presigned link), from the store for
    local links (the HTTP service that checks their signature is tested elsewhere)."""
    if cache.settings.storage_backend == "s3":
        async with httpx.AsyncClient() as client:
            response = await client.get(url)
            response.raise_for_status()
            return response.content
    key = urlsplit(url).path.removeprefix("/files/")
    return b"".join([chunk async for chunk in cache.backends.store.open_stream(key)])


async def _all_cached(cache: MediaCache, n: int) -> None:
    async def done() -> bool:
        return (await cache.cache_stats()).cached == n
    await wait_until(done, what=f"{n} cached assets")


async def test_one_video_behind_100_signed_links_is_one_download_one_asset_one_object(
        mc: MediaCache, start_worker: WorkerFactory, origin: Origin) -> None:
    n, now = _n(), int(time.time())
    path = f"/big/{n}.mp4"
    links = [origin.url(f"{path}?size=200000&x-expires={now + 600 + i}&x-signature=sig{i:03d}") for i in range(100)]
    first = [await mc.cache_image(u) for u in links[:50]]
    # Not yet downloaded: the asset took the link that expires last, under the same id.
    rec = await mc.get_asset(first[0])
    assert rec is not None and rec.status is CacheStatus.PENDING and rec.original_url == links[49]
    assert (await mc.queue_stats()).waiting == 1

    await start_worker(mc)
    await _all_cached(mc, 1)
    rest = [await mc.cache_image(u) for u in links[50:]]
    ids = first + rest
    assert set(ids) == {first[0]} and len(ids) == 100
    assert len(origin.hits(path)) == 1
    assert len(await _objects(mc)) == 1
    rec = await mc.get_asset(first[0])
    assert rec is not None and rec.requests == 100 and rec.original_url == links[49]
    usage = await mc.usage()
    assert usage.downloads_avoided == 99 and usage.assets == 1


async def test_a_batch_returns_one_id_per_file_in_input_order(cache: MediaCache, origin: Origin) -> None:
    n = _n()
    a, b = origin.url(f"/media/{n}.jpg"), origin.url(f"/media/{n + 1}.jpg")
    ids = await cache.cache_images([f"{a}?oe=6A00F000&oh=x1", f"{b}?X-Amz-Signature=s", f"{a}?oe=6A00F001&oh=x2", a])
    assert ids[0] == ids[2] == ids[3] and ids[1] != ids[0]
    assert (await cache.queue_stats()).waiting == 2
    # Another batch (another caller) gets the same ids and queues nothing.
    assert await cache.cache_images([b, a]) == [ids[1], ids[0]]
    assert (await cache.queue_stats()).waiting == 2


async def test_dedup_off_makes_an_asset_per_request(make_settings: SettingsFactory, origin: Origin) -> None:
    url = origin.url(f"/media/{_n()}.jpg")
    async with MediaCache(make_settings(dedup="off")) as cache:
        ids = [await cache.cache_image(url) for _ in range(3)]
        assert len(set(ids)) == 3
        rec = await cache.get_asset(ids[0])
        assert rec is not None and rec.source_key is None


async def test_a_failed_asset_is_not_reused(cache: MediaCache, start_worker: WorkerFactory, origin: Origin) -> None:
    url = origin.url(f"/status/404?n={_n()}")
    first = await cache.cache_image(url)
    await start_worker()

    async def failed() -> bool:
        rec = await cache.get_asset(first)
        return rec is not None and rec.status is CacheStatus.FAILED
    await wait_until(failed, what="the asset FAILED")
    second = await cache.cache_image(url)
    assert second != first


async def test_same_bytes_at_ten_paths_are_one_object_until_the_last_asset_goes(
        mc: MediaCache, start_worker: WorkerFactory, origin: Origin) -> None:
    n = _n()
    urls = [origin.url(f"/alias/p{i}/{n}.jpg?size=30000") for i in range(10)]
    ids = await mc.cache_images(urls)
    await start_worker(mc)
    await _all_cached(mc, 10)
    assert sum(len(origin.hits(f"/alias/p{i}/{n}.jpg")) for i in range(10)) == 10

    # Downloads that finished at the same moment each stored a copy; each job merges the copies
    # right after recording its own, so once the jobs are done one object is left.
    async def jobs_done() -> bool:
        return (await mc.queue_stats()).completed == 10
    await wait_until(jobs_done, what="10 completed jobs")
    objects = await _objects(mc)
    assert len(objects) == 1
    records = await mc.get_assets(ids)
    assert {r.cache_key for r in records.values()} == {objects[0]}
    expected = sha256_of("media", n, 30000)
    for url in await mc.get_urls(ids):
        assert url is not None and hashlib.sha256(await _fetch(mc, url)).hexdigest() == expected
    usage = await mc.usage()
    assert (usage.stored_objects, usage.stored_bytes, usage.logical_bytes) == (1, 30000, 300000)
    assert usage.bytes_not_stored == 270000
    assert await mc.stored_bytes() == 30000

    # An application row references the tenth (the same URL lands on the same asset): cleaning
    # up removes the other nine and keeps the object.
    carousel = await mc.save_carousel(title="t", author_avatar_url=urls[9])
    assert carousel.author_avatar_key == str(ids[9])
    report = await mc.cleanup_report(days=0)
    assert (report.removed, report.kept_referenced) == (9, 1)
    assert await _objects(mc) == objects
    url = await mc.get_url(ids[9])
    assert url is not None and hashlib.sha256(await _fetch(mc, url)).hexdigest() == expected
    assert await mc.get_url(ids[0], urls[0]) == urls[0]

    assert await mc.cleanup(days=0, include_referenced=True) == 1
    assert await _objects(mc) == []
    gc = await mc.collect_garbage(dry_run=True)
    assert (gc.orphan_objects, gc.dangling_rows) == ([], [])
    bucket = (await mc.usage(check_bucket=True)).bucket
    assert bucket is not None and (bucket.orphan_objects, bucket.missing_objects) == (0, 0)


async def test_the_bucket_check_reports_orphans_and_missing_objects_with_bytes(
        cache: MediaCache, start_worker: WorkerFactory, origin: Origin) -> None:
    n = _n()
    ids = await cache.cache_images([origin.url(f"/media/{n + i}.jpg?size={1000 * (i + 1)}") for i in range(2)])
    await start_worker()
    await _all_cached(cache, 2)
    gone = await cache.get_asset(ids[1])
    assert gone is not None and gone.cache_key is not None
    await cache.backends.store.delete(gone.cache_key)

    async def chunks() -> AsyncIterator[bytes]:
        yield b"x" * 700
    await cache.backends.store.put_stream("media/00000000-0000-4000-8000-000000000000/stray.jpg", chunks())
    bucket = (await cache.usage(check_bucket=True)).bucket
    assert bucket is not None
    assert (bucket.orphan_objects, bucket.orphan_bytes) == (1, 700)
    assert (bucket.missing_objects, bucket.missing_bytes) == (1, 2000)


async def test_a_repeat_request_makes_an_asset_young_for_cleanup_and_shows_on_the_dashboard(
        cache: MediaCache, start_worker: WorkerFactory, origin: Origin) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from mediacache.api.routes_dashboard import dashboard_data
    from mediacache.db.columns import utcnow
    from mediacache.db.models import CacheAsset

    n = _n()
    again, left = origin.url(f"/media/{n}.jpg?size=1000"), origin.url(f"/media/{n + 1}.jpg?size=1000")
    ids = [await cache.cache_image(again), await cache.cache_image(left)]
    await start_worker()
    await _all_cached(cache, 2)
    t = CacheAsset.__table__
    old = utcnow() - timedelta(days=40)
    async with cache.backends.engine.begin() as conn:
        await conn.execute(update(t).where(t.c.id.in_(ids)).values(created_at=old, cached_at=old,
                                                                   last_requested_at=old))
    # Requested again (a new signature of the same file): as young as that request.
    assert await cache.cache_image(f"{again}&x-expires={int(time.time()) + 600}&x-signature=s") == ids[0]
    data = await dashboard_data(cache, details=True)
    assert (data.downloads_avoided, data.bytes_not_stored) == (1, 0)

    assert (await cache.cleanup_report(days=30)).removed == 1
    assert set(await cache.get_assets(ids)) == {ids[0]}
