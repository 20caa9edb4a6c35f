"""Regression tests of the HTTP service for the outside probe of issue 12 (each failed before the fix)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

from mediacache.api.app import create_app
from mediacache.api.server import bind, serving
from mediacache.domain import CacheStatus
from mediacache.storage.signing import sign_path
from tests.support.api import Api, raw_request, running_api
from tests.support.services import SettingsFactory

TOKEN = "sec-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def _chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _signed(api: Api, key: str) -> str:
    return sign_path(api.settings.signing_secret.get_secret_value().encode(), key, ttl_s=600)  # type: ignore[union-attr]


async def test_urls_signs_a_legacy_key_only_when_an_object_is_stored_under_it(make_settings: SettingsFactory) -> None:
    async with running_api(make_settings, run_worker=False) as api:
        await api.cache.backends.store.put_stream("legacy/a.jpg", _chunk(b"a"))
        got = await api.client.post("/api/urls", json={"values": ["media", "legacy", "legacy/none.jpg", "legacy/a.jpg"],
                                                        "original_urls": [None, "https://x.example/o", None, None]})
        assert got.status_code == 200
        urls = got.json()["urls"]
        assert urls[:3] == [None, "https://x.example/o", None]
        assert urls[3].startswith(f"{api.url}/files/legacy/a.jpg?")
        assert (await api.client.get(urls[3])).content == b"a"


async def test_files_serves_regular_files_only(make_settings: SettingsFactory) -> None:
    async with running_api(make_settings, run_worker=False) as api:
        await api.cache.backends.store.put_stream("media/x/a.jpg", _chunk(b"a"))
        for key in ("media", "media/x"):
            for method in ("GET", "HEAD"):
                status, _, _ = await raw_request(api.url, _signed(api, key), method=method)
                assert status == 404, (method, key)


async def test_a_non_ascii_signature_is_a_403_not_a_500(make_settings: SettingsFactory) -> None:
    async with running_api(make_settings, run_worker=False) as api:
        for query in ("exp=9999999999&sig=%C3%A9", "exp=9999999999&sig=%ED%A0%80", "exp=%D9%A1%D9%A2&sig=x",
                      "exp=" + "9" * 5000 + "&sig=x"):
            status, _, _ = await raw_request(api.url, f"/files/x?{query}")
            assert status == 403, query


async def test_range_numbers_of_any_length_are_no_500(make_settings: SettingsFactory) -> None:
    async with running_api(make_settings, run_worker=False) as api:
        await api.cache.backends.store.put_stream("legacy/r.bin", _chunk(b"0123456789"))
        link = _signed(api, "legacy/r.bin")
        huge = "9" * 5000
        expected = {f"bytes={huge}-": 416, f"bytes=0-{huge}": 206, f"bytes=-{huge}": 206, f"bytes={huge}-{huge}": 416}
        for header, status_code in expected.items():
            for method in ("GET", "HEAD"):
                status, headers, _ = await raw_request(api.url, link, method=method, headers={"Range": header})
                assert status == status_code, (method, header[:20], status)
                if status == 206:
                    assert headers["content-range"] == "bytes 0-9/10"


async def test_the_token_is_checked_before_the_body_is_parsed(make_settings: SettingsFactory) -> None:
    async with running_api(make_settings, run_worker=False, api_token=TOKEN) as api:
        json_type = {"Content-Type": "application/json"}
        for path in ("/api/assets", "/api/assets/batch", "/api/assets/cleanup"):
            status, _, _ = await raw_request(api.url, path, method="POST", headers=json_type, body=b"{")
            assert status == 401, path
            status, _, _ = await raw_request(api.url, path, method="POST", headers={**json_type, "Authorization":
                                                                                     "Bearer wrong"}, body=b"{")
            assert status == 403, path
            status, _, _ = await raw_request(api.url, path, method="POST", headers={**json_type, **AUTH}, body=b"{")
            assert status == 400, path
        # An anonymous caller's stalled body is never waited for: the refusal comes at once.
        reader, writer = await asyncio.open_connection(*api.url.removeprefix("http://").split(":"))
        writer.write(b"POST /api/assets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000000\r\n\r\n{")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout=5)
        writer.close()
        assert b" 401 " in line


async def test_cleanup_refuses_booleans_and_strings_for_days(make_settings: SettingsFactory) -> None:
    async with running_api(make_settings, run_worker=False) as api:
        asset_id = await api.cache.cache_image("http://127.0.0.1:9/a.jpg")
        for body in ({"days": True}, {"days": "0"}, {"days": False}, {"days": 0, "include_referenced": 1}):
            got = await api.client.post("/api/assets/cleanup", json=body)
            assert got.status_code == 422, body
        assert (await api.client.post("/api/assets/cleanup", json={"days": 7.0})).json() == {"removed": 0}
        assert await api.cache.get_asset(asset_id) is not None


async def test_a_stalled_request_body_gets_408_after_the_deadline(make_settings: SettingsFactory) -> None:
    async with running_api(make_settings, run_worker=False, request_body_timeout_s=1.0) as api:
        reader, writer = await asyncio.open_connection(*api.url.removeprefix("http://").split(":"))
        started = time.monotonic()
        writer.write(b"POST /api/assets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"url\": ")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)  # read to EOF: the connection is closed
        writer.close()
        elapsed_s = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
        assert 0.9 <= elapsed_s < 5, elapsed_s


async def test_post_only_paths_answer_405_to_get(make_settings: SettingsFactory) -> None:
    async with running_api(make_settings, run_worker=False) as api:
        for path in ("/api/assets/batch", "/api/assets/retry-failed", "/api/assets/cleanup"):
            got = await api.client.get(path)
            assert got.status_code == 405, (path, got.text)
        schema = (await api.client.get("/openapi.json")).json()["components"]["schemas"]
        url = schema["QueueRequest"]["properties"]["url"]
        assert url["maxLength"] == 4096 and url["pattern"].startswith("^[hH][tT][tT][pP][sS]?://")
        assert schema["QueueBatchRequest"]["properties"]["urls"]["maxItems"] == 1000
        resolve = schema["ResolveRequest"]
        assert resolve["x-equal-length"] == ["values", "original_urls"]
        assert "as many entries as `values`" in resolve["properties"]["original_urls"]["description"]


async def test_an_exposed_server_protects_reads_and_hides_internal_errors(make_settings: SettingsFactory) -> None:
    sock = bind("127.0.0.1", 0)
    settings = make_settings(api_token=TOKEN, redis_port=1)
    async with serving(create_app(settings, run_worker=False, exposed=True), sock) as running:
        import httpx

        async with httpx.AsyncClient(base_url=running.url) as client:
            assert (await client.get("/api/stats")).status_code == 401
            assert (await client.post("/api/urls", json={"values": []})).status_code == 401
            assert (await client.get("/api/dashboard")).status_code == 401
            ready = await client.get("/readyz")
            assert ready.json()["checks"]["redis"] == "unavailable" and "6379" not in ready.text
            page = await client.get("/")
            assert page.status_code == 200 and "127.0.0.1:1" not in page.text
            assert (await client.post("/api/urls", json={"values": []}, headers=AUTH)).json() == {"urls": []}
            detailed = (await client.get("/readyz", headers=AUTH)).json()["checks"]["redis"]
            assert "Redis" in detailed
    # Configured otherwise: reads open again.
    sock = bind("127.0.0.1", 0)
    settings = make_settings(api_token=TOKEN, api_token_reads=False)
    async with serving(create_app(settings, run_worker=False, exposed=True), sock) as running:
        async with httpx.AsyncClient(base_url=running.url) as client:
            assert (await client.post("/api/urls", json={"values": []})).status_code == 200


async def test_media_redirects_a_pending_asset_only_to_its_validated_url(make_settings: SettingsFactory) -> None:
    async with running_api(make_settings, run_worker=False) as api:
        asset_id = await api.cache.cache_image("https://cdn.example/v.mp4?x=1")
        got = await api.client.get(f"/media/{asset_id}", follow_redirects=False)
        assert got.status_code == 302 and got.headers["location"] == "https://cdn.example/v.mp4?x=1"
        assert (await api.cache.get_asset(asset_id)).status is CacheStatus.PENDING  # type: ignore[union-attr]
        for bad in ("javascript:alert(1)", "//evil.example/", "data:text/html,x"):
            queued = await api.client.post("/api/assets", json={"url": bad})
            assert queued.status_code == 422, bad
        assert (await api.client.get(f"/media/{uuid.uuid4()}", follow_redirects=False)).status_code == 404


async def test_localhost_in_any_spelling_is_blocked_at_once(make_settings: SettingsFactory) -> None:
    from mediacache.domain import ErrorKind
    from mediacache.errors import FetchError
    from mediacache.fetching.netguard import AddressPolicy, GuardedNetworkBackend

    backend = GuardedNetworkBackend(AddressPolicy())
    for host in ("LOCALHOST.", "localhost.", "LocalHost", "cdn.localhost"):
        started = time.monotonic()
        try:
            await backend.connect_tcp(host, 80, timeout=2.0)
        except FetchError as exc:
            assert exc.kind == ErrorKind.BLOCKED, host
        else:
            raise AssertionError(f"{host} was connected to")
        assert time.monotonic() - started < 1.0
