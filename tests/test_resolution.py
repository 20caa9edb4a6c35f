"""URL resolution: cached ids, pending ids, legacy keys and none, for many values in one query."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

from mediacache.service import MediaCache
from tests.conftest import WorkerFactory, count_queries, wait_until
from tests.origin import Origin


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
    with count_queries(cache) as statements:
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
    with count_queries(cache) as statements:
        urls = await cache.get_urls(ids)
    assert urls == [f"https://example.com/{i}.jpg" for i in range(1000)]
    assert len(statements) == 1


async def test_a_malformed_legacy_key_falls_back_to_the_original(cache: MediaCache) -> None:
    assert await cache.get_url("../../etc/passwd", "https://orig/x.jpg") == "https://orig/x.jpg"
