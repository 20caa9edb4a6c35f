"""Enqueue: validation before writing, order, batches, the job's shape, and Redis going away."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
import redis.asyncio as aioredis

from mediacache.domain import CacheStatus
from mediacache.errors import InvalidURLError, QueueUnavailableError
from mediacache.service import MediaCache
from tests.support.origin import Origin
from tests.support.processes import PrivateRedis
from tests.support.services import REDIS_HOST, REDIS_PORT, SettingsFactory, WorkerFactory
from tests.support.waiting import wait_until


@pytest.mark.parametrize("bad", [
    "ftp://example.com/a.jpg", "javascript:alert(1)", "file:///etc/passwd", "http://", "https:///path",
    "not a url", "", "http://example.com/" + "a" * 10_000, "//example.com/a.jpg",
])
async def test_bad_urls_are_refused_before_anything_is_written(cache: MediaCache, bad: str) -> None:
    with pytest.raises(InvalidURLError):
        await cache.cache_image(bad)
    with pytest.raises(InvalidURLError):
        await cache.cache_images(["https://example.com/ok.jpg", bad])
    assert (await cache.cache_stats()).total == 0
    assert (await cache.queue_stats()).waiting == 0


async def test_cache_image_writes_pending_row_and_the_seed_job(cache: MediaCache, queue_prefix: str) -> None:
    url = "https://cdn.example.com/v/abc.mp4?x-expires=1999999999&sig=1"
    asset_id = await cache.cache_image(url)
    rec = await cache.get_asset(asset_id)
    assert rec is not None and rec.status is CacheStatus.PENDING and rec.original_url == url
    assert rec.attempts == 0

    client = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT, decode_responses=True)
    try:
        job = await client.hgetall(f"{queue_prefix}:media-cache:{asset_id}")
    finally:
        await client.aclose()
    assert job["name"] == "cache-media"
    assert json.loads(job["data"]) == {"cacheAssetId": str(asset_id), "url": url}
    opts = json.loads(job["opts"])
    assert opts["attempts"] == 3
    assert opts["backoff"] == {"type": "exponential", "delay": 1000}
    assert (await cache.queue_stats()).waiting == 1


async def test_cache_images_keeps_input_order_and_queues_all(cache: MediaCache) -> None:
    urls = [f"https://example.com/img/{i}.jpg" for i in range(120)] + ["https://example.com/img/0.jpg"]
    ids = await cache.cache_images(urls)
    # The repeated URL is one asset (deduplication): the same id, one job.
    assert len(ids) == len(urls) and len(set(ids)) == 120 and ids[-1] == ids[0]
    for asset_id, url in zip(ids, urls, strict=True):
        rec = await cache.get_asset(asset_id)
        assert rec is not None and rec.original_url == url
    assert (await cache.queue_stats()).waiting == 120
    assert await cache.cache_images([]) == []


async def test_cache_tiktok_post_media(cache: MediaCache) -> None:
    media = await cache.cache_tiktok_post_media(
        video_url="https://v.example.com/video.mp4", cover_url=None, music_url="https://m.example.com/a.mp3",
        images=[{"url": "https://i.example.com/1.jpg", "width": 1080, "height": 1920},
                {"url": "https://i.example.com/2.jpg", "width": 720, "height": 1280}],
        avatar_url="https://a.example.com/me.jpg")
    assert media.cover is None and media["cover"] is None
    assert [(i.width, i.height) for i in media.images] == [(1080, 1920), (720, 1280)]
    expected = {media.video: "https://v.example.com/video.mp4", media.music: "https://m.example.com/a.mp3",
                media.avatar: "https://a.example.com/me.jpg", media.images[0].id: "https://i.example.com/1.jpg",
                media.images[1].id: "https://i.example.com/2.jpg"}
    for asset_id, url in expected.items():
        assert asset_id is not None
        rec = await cache.get_asset(asset_id)
        assert rec is not None and rec.original_url == url and rec.status is CacheStatus.PENDING
    assert (await cache.cache_stats()).total == 5
    empty = await cache.cache_tiktok_post_media()
    assert (empty.video, empty.cover, empty.music, empty.avatar, empty.images) == (None, None, None, None, [])


# ---- Redis really stopped --------------------------------------------------------------------

async def test_redis_down_fails_the_call_and_leaves_no_row(
        make_settings: SettingsFactory, private_redis: PrivateRedis, origin: Origin,
        start_worker: WorkerFactory) -> None:
    settings = make_settings(redis_port=private_redis.port)
    async with MediaCache(settings) as mc:
        first = await mc.cache_image(origin.url("/media/1.jpg?size=2000"))
        private_redis.stop()
        with pytest.raises(QueueUnavailableError, match=r"Redis at redis://127\.0\.0\.1:\d+/0 did not answer"):
            await mc.cache_image(origin.url("/media/2.jpg?size=2000"))
        with pytest.raises(QueueUnavailableError):
            await mc.cache_images([origin.url(f"/media/{i}.jpg?size=2000") for i in range(3, 8)])
        stats = await mc.cache_stats()
        # Only the asset queued before the outage exists; the refused ones left nothing behind.
        assert stats.total == 1 and stats.pending == 1

        private_redis.start()  # append-only file: the first job survived the restart
        second = await asyncio.wait_for(mc.cache_image(origin.url("/media/2.jpg?size=2000")), 10)
        await start_worker(mc)

        async def both_cached() -> bool:
            recs = [await mc.get_asset(i) for i in (first, second)]
            return all(r is not None and r.status is CacheStatus.CACHED for r in recs)

        await wait_until(both_cached, what="the assets queued around the outage")
        assert (await mc.cache_stats()).total == 2


async def test_unknown_ids_and_non_uuid_values_get_none_from_get_asset(cache: MediaCache) -> None:
    assert await cache.get_asset(uuid.uuid4()) is None
    assert await cache.get_asset("not-a-uuid") is None


async def test_many_calls_in_flight_wait_for_a_redis_connection_instead_of_failing(cache: MediaCache) -> None:
    # redis-py's default pool raises "Too many connections" past 100 calls in flight; a cleanup
    # removing jobs while an API queues new ones reaches that easily.
    queue = cache.backends.queue
    ids = [uuid.uuid4() for _ in range(160)]
    await asyncio.gather(*(queue.add(i, f"https://example.com/many/{i}.jpg") for i in ids))
    assert (await cache.queue_stats()).waiting == 160
    await asyncio.gather(queue.remove(ids[:100]), *(queue.add(uuid.uuid4(), "https://example.com/x.jpg")
                                                     for _ in range(60)))
    assert (await cache.queue_stats()).waiting == 120


async def test_removing_jobs_takes_those_redis_holds_and_passes_over_the_rest(cache: MediaCache) -> None:
    queue = cache.backends.queue
    held = [uuid.uuid4() for _ in range(30)]
    await asyncio.gather(*(queue.add(i, f"https://example.com/held/{i}.jpg") for i in held))
    never_queued = [uuid.uuid4() for _ in range(300)]
    await queue.remove(never_queued[:150] + held + never_queued[150:])
    assert set((await queue.job_states(held + never_queued[:5])).values()) == {"missing"}
    assert (await cache.queue_stats()).waiting == 0
