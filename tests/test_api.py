"""The HTTP service end to end through real HTTP: queue, watch, redirect, serve files with Range, resolve."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from mediacache.api.routes_files import redirect_max_age_s
from tests.support.api import Api, new_id, running_api
from tests.support.origin import Origin, body
from tests.support.services import SettingsFactory


async def test_queue_watch_cached_and_follow_media_to_the_bytes(api: Api, origin: Origin) -> None:
    url = origin.url("/media/11.jpg?size=7777")
    queued = await api.client.post("/api/assets", json={"url": url})
    assert queued.status_code == 202, queued.text
    asset_id = queued.json()["id"]
    assert queued.json()["status"] == "PENDING"

    await api.wait_settled([asset_id])
    record = (await api.client.get(f"/api/assets/{asset_id}")).json()
    assert record["status"] == "CACHED" and record["original_url"] == url
    # The same media asked for again: the same id, and the answer says it is stored already.
    again = (await api.client.post("/api/assets", json={"url": url})).json()
    assert again == {"id": asset_id, "status": "CACHED"}
    assert record["size_bytes"] == 7777 and record["content_type"] == "image/jpeg"
    assert record["sha256"] == hashlib.sha256(body("media", 11, 7777)).hexdigest()
    assert record["url"].startswith(f"{api.url}/files/media/{asset_id}/")

    redirect = await api.client.get(f"/media/{asset_id}")
    assert redirect.status_code == 302
    # A browser may keep the redirect only a fraction of the presigned link's life.
    max_age_s = redirect_max_age_s(api.settings.url_ttl_s)
    assert redirect.headers["cache-control"] == f"private, max-age={max_age_s}"
    assert 0 < max_age_s <= api.settings.url_ttl_s // 10
    location = redirect.headers["location"]
    assert location.startswith(f"{api.url}/files/")

    got = await api.client.get(location)
    assert got.status_code == 200
    assert got.content == body("media", 11, 7777)
    assert got.headers["content-type"] == "image/jpeg"
    assert got.headers["content-length"] == "7777"
    assert got.headers["etag"] == f'"{record["sha256"]}"'
    assert got.headers["accept-ranges"] == "bytes"
    assert got.headers["x-content-type-options"] == "nosniff"
    # The file response is never cached past the link's expiry.
    exp = int(dict(p.split("=") for p in urlsplit(location).query.split("&"))["exp"])
    cache_s = int(got.headers["cache-control"].split("max-age=")[1])
    assert cache_s <= api.settings.url_ttl_s

    followed = await api.client.get(f"/media/{asset_id}", follow_redirects=True)
    assert followed.status_code == 200 and followed.content == got.content
    revalidated = await api.client.get(location, headers={"If-None-Match": got.headers["etag"]})
    assert revalidated.status_code == 304 and revalidated.content == b""
    assert exp > 0


async def test_media_of_an_asset_not_yet_cached_redirects_to_the_original_and_is_not_stored(
        make_settings: SettingsFactory, origin: Origin) -> None:
    async with running_api(make_settings, run_worker=False) as api:
        url = origin.url("/media/12.jpg?size=100")
        asset_id = (await api.client.post("/api/assets", json={"url": url})).json()["id"]
        redirect = await api.client.get(f"/media/{asset_id}")
        assert redirect.status_code == 302
        assert redirect.headers["location"] == url
        assert redirect.headers["cache-control"] == "no-store"
        missing = await api.client.get(f"/media/{new_id()}")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
        assert (await api.client.get("/media/not-a-uuid")).status_code == 422


async def test_batch_resolve_and_stats(api: Api, origin: Origin) -> None:
    urls = [origin.url(f"/media/{20 + i}.jpg?size={1000 + i}") for i in range(3)]
    queued = await api.client.post("/api/assets/batch", json={"urls": urls})
    assert queued.status_code == 202, queued.text
    ids = queued.json()["ids"]
    assert len(ids) == 3
    await api.wait_settled(ids)

    unknown = new_id()
    await api.cache.backends.store.put_stream("legacy/cover.jpg", _one_chunk(b"cover"))
    resolved = await api.client.post("/api/urls", json={
        "values": [*ids, unknown, None, "legacy/cover.jpg", "legacy/none.jpg"],
        "original_urls": ["https://a.example/x", None, None, "https://b.example/unknown", "https://c.example/none",
                          None, None]})
    assert resolved.status_code == 200, resolved.text
    out = resolved.json()["urls"]
    assert all(u.startswith(f"{api.url}/files/media/") for u in out[:3])
    assert out[3:5] == ["https://b.example/unknown", "https://c.example/none"]
    # A legacy key is signed only when an object is stored under it.
    assert out[5].startswith(f"{api.url}/files/legacy/cover.jpg?")
    assert out[6] is None
    # Every resolved link serves the right object.
    for i, link in enumerate(out[:3]):
        got = await api.client.get(link)
        assert got.content == body("media", 20 + i, 1000 + i)

    stats = (await api.client.get("/api/stats")).json()
    assert stats["cache"] == {"pending": 0, "downloading": 0, "cached": 3, "failed": 0, "total": 3,
                              "failed_by_kind": {}, "at_risk": 0}
    assert set(stats["queue"]) == {"waiting", "active", "completed", "failed", "delayed"}
    assert stats["queue"]["waiting"] == 0 and stats["queue"]["active"] == 0


async def test_retry_failed_and_cleanup_through_the_api(api: Api, origin: Origin) -> None:
    path = f"/flaky/{new_id()}.jpg?fail=1&status=404"
    asset_id = (await api.client.post("/api/assets", json={"url": origin.url(path)})).json()["id"]
    await api.wait_settled([asset_id])
    failed = (await api.client.get(f"/api/assets/{asset_id}")).json()
    assert failed["status"] == "FAILED" and failed["error_kind"] == "not_found" and "404" in failed["error"]
    assert failed["url"] == origin.url(path)  # a failed asset shows its original

    retried = await api.client.post("/api/assets/retry-failed")
    assert retried.status_code == 200 and retried.json() == {"retried": 1}
    await api.wait_settled([asset_id])
    assert (await api.client.get(f"/api/assets/{asset_id}")).json()["status"] == "CACHED"

    assert (await api.client.post("/api/assets/cleanup", json={"days": 1})).json() == {"removed": 0}
    assert (await api.client.post("/api/assets/cleanup", json={"days": 0})).json() == {"removed": 1}
    assert (await api.client.get(f"/api/assets/{asset_id}")).status_code == 404


async def test_openapi_schema_names_every_endpoint(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    paths = schema["paths"]
    for path, method in [("/api/assets", "post"), ("/api/assets/batch", "post"), ("/api/assets/{asset_id}", "get"),
                         ("/api/urls", "post"), ("/api/stats", "get"), ("/api/assets/retry-failed", "post"),
                         ("/api/assets/cleanup", "post"), ("/media/{asset_id}", "get"), ("/files/{key}", "get"),
                         ("/healthz", "get"), ("/readyz", "get"), ("/metrics", "get"), ("/api/dashboard", "get"),
                         ("/api/tiktok/posts", "get"), ("/api/tiktok/posts/{post_id}", "get"),
                         ("/api/carousels/{carousel_id}", "get")]:
        assert method in paths[path], (path, method)
    assert {"QueueBatchRequest", "TikTokPostRecord", "CarouselRecord"} <= set(schema["components"]["schemas"])
    assert (await api.client.get("/docs")).status_code == 200


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data
