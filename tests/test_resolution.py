"""URL resolution: cached ids, pending ids, legacy keys and none, for many values in one query."""

from __future__ import annotations

import asyncio
import socket
import uuid
from typing import Any
from urllib.parse import urlsplit

from mediacache.service import MediaCache
from tests.support.origin import Origin
from tests.support.queries import count_queries
from tests.support.services import SettingsFactory, WorkerFactory
from tests.support.waiting import wait_until


async def test_get_urls_resolves_every_kind_of_value_in_one_query(
        cache: MediaCache, start_worker: WorkerFactory, origin: Origin) -> None:
    cached_urls = [origin.url(f"/media/{i}.jpg?size=1500") for i in range(30)]
    cached_ids = await cache.cache_images(cached_urls)
    await start_worker()

    async def all_cached() -> bool:
        return (await cache.cache_stats()).cached == 30

    await wait_until(all_cached, what="30 cached assets")
    never_ready = origin.url(f"/flaky/{uuid.uuid4().hex}.jpg?fail=100000")
    pending_id = await cache.cache_image(never_ready)
    unknown_id = uuid.uuid4()

    values: list[Any] = [*cached_ids, pending_id, str(unknown_id), "legacy/covers/1.jpg", None, None]
    originals = [None] * 30 + ["https://orig/pending", "https://orig/unknown", None, "https://orig/none", None]
    async with count_queries(cache) as statements:
        urls = await cache.get_urls(values, originals)
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1, statements

    base = cache.settings.public_base_url
    for asset_id, url in zip(cached_ids, urls[:30], strict=True):
        rec = await cache.get_asset(asset_id)
        assert rec is not None and url is not None
        assert url.startswith(f"{base}/files/{rec.cache_key}?exp=")
    assert urls[30] == "https://orig/pending"  # not cached yet: the original given
    assert await cache.get_url(pending_id) == never_ready  # or its own
    assert urls[31] == "https://orig/unknown"
    assert urlsplit(urls[32] or "").path == "/files/legacy/covers/1.jpg"
    assert urls[33] == "https://orig/none"
    assert urls[34] is None
    # Ids in their other spellings resolve the same.
    assert (await cache.get_url(str(cached_ids[0]).upper()) or "").split("?")[0] == (urls[0] or "").split("?")[0]


async def test_get_urls_of_a_thousand_ids_is_one_query(cache: MediaCache) -> None:
    ids = await cache.cache_images([f"https://example.com/{i}.jpg" for i in range(1000)])
    async with count_queries(cache) as statements:
        urls = await cache.get_urls(ids)
    assert urls == [f"https://example.com/{i}.jpg" for i in range(1000)]
    assert len(statements) == 1


async def test_a_malformed_legacy_key_falls_back_to_the_original(cache: MediaCache) -> None:
    assert await cache.get_url("../../etc/passwd", "https://orig/x.jpg") == "https://orig/x.jpg"


async def test_s3_urls_are_presigned_locally_in_one_query_with_no_request_to_the_store(
        make_settings: SettingsFactory) -> None:
    # An endpoint where nothing listens: any request to the store would fail or hang.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    s3 = {"storage": "s3", "s3_endpoint_url": closed, "r2_access_key_id": "id", "r2_secret_access_key": "secret",
          "r2_bucket_name": "media"}
    async with MediaCache(make_settings(**s3)) as cache:
        pending = await cache.cache_image("https://cdn.example.com/a.jpg")
        async with count_queries(cache) as statements:
            urls = await asyncio.wait_for(cache.get_urls([pending, "legacy/covers/1.jpg", None]), 2)
        assert len(statements) == 1
        assert urls[0] == "https://cdn.example.com/a.jpg" and urls[2] is None
        legacy = urlsplit(urls[1] or "")
        assert f"{legacy.scheme}://{legacy.netloc}" == closed and legacy.path == "/media/legacy/covers/1.jpg"
        assert "X-Amz-Signature=" in legacy.query and "X-Amz-Expires=3600" in legacy.query
    async with MediaCache(make_settings(**s3, r2_public_url="https://media.example.com")) as public:
        assert await public.get_url("legacy/covers/1.jpg") == "https://media.example.com/legacy/covers/1.jpg"
