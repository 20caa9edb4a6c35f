"""Bad requests get a 4xx with a JSON body that says what is wrong; no input produces a 500."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.api import new_id, raw_request, running_api
from tests.support.services import SettingsFactory

JSON = {"Content-Type": "application/json"}
LONG_URL = "http://127.0.0.1:9/" + "a" * 9000

# (method, path, raw body or None, extra headers, expected status)
CASES: list[tuple[str, str, bytes | None, dict[str, str], int]] = [
    ("POST", "/api/assets", b"{bad json", JSON, 400),
    ("POST", "/api/assets", b"", JSON, 422),
    ("POST", "/api/assets", b"null", JSON, 422),
    ("POST", "/api/assets", b"[]", JSON, 422),
    ("POST", "/api/assets", b'"http://127.0.0.1:9/a.jpg"', JSON, 422),
    ("POST", "/api/assets", b"{}", JSON, 422),
    ("POST", "/api/assets", b'{"urls": "http://127.0.0.1:9/a.jpg"}', JSON, 422),
    ("POST", "/api/assets", b'{"url": 42}', JSON, 422),
    ("POST", "/api/assets", b'{"url": null}', JSON, 422),
    ("POST", "/api/assets", b'{"url": ""}', JSON, 422),
    ("POST", "/api/assets", b'{"url": ["http://127.0.0.1:9/a.jpg"]}', JSON, 422),
    ("POST", "/api/assets", b'{"url": "not a url"}', JSON, 422),
    ("POST", "/api/assets", b'{"url": "ftp://127.0.0.1/a.jpg"}', JSON, 422),
    ("POST", "/api/assets", b'{"url": "javascript:alert(1)"}', JSON, 422),
    ("POST", "/api/assets", b'{"url": "http://"}', JSON, 422),
    ("POST", "/api/assets", json.dumps({"url": LONG_URL}).encode(), JSON, 422),
    ("POST", "/api/assets", b'{"url": "http://127.0.0.1:9/a.jpg", "extra": 1}', JSON, 422),
    ("POST", "/api/assets", b'\xff\xfe{"url"', JSON, 400),
    ("POST", "/api/assets", b'{"url": "http://127.0.0.1:9/\\ud800"}', JSON, 422),
    ("POST", "/api/assets/batch", b'{"urls": "http://127.0.0.1:9/a.jpg"}', JSON, 422),
    ("POST", "/api/assets/batch", b'{"urls": [1, 2]}', JSON, 422),
    ("POST", "/api/assets/batch", b'{"urls": [null]}', JSON, 422),
    ("POST", "/api/assets/batch", b'{"url": []}', JSON, 422),
    ("POST", "/api/assets/batch", json.dumps({"urls": ["http://127.0.0.1:9/a.jpg"] * 1001}).encode(), JSON, 422),
    ("POST", "/api/assets/batch", b'{"urls": ["http://127.0.0.1:9/a.jpg", "nope"]}', JSON, 422),
    ("POST", "/api/assets/batch", b'{"urls": {"a": 1}}', JSON, 422),
    ("POST", "/api/urls", b'{"values": "abc"}', JSON, 422),
    ("POST", "/api/urls", b'{"values": [1]}', JSON, 422),
    ("POST", "/api/urls", b'{"values": ["a"], "original_urls": ["x", "y"]}', JSON, 422),
    ("POST", "/api/urls", json.dumps({"values": [None] * 1001}).encode(), JSON, 422),
    ("POST", "/api/urls", json.dumps({"values": ["k" * 2000]}).encode(), JSON, 422),
    ("POST", "/api/urls", b'{}', JSON, 422),
    ("POST", "/api/assets/cleanup", b'{"days": -1}', JSON, 422),
    ("POST", "/api/assets/cleanup", b'{"days": "soon"}', JSON, 422),
    ("POST", "/api/assets/cleanup", b'{"days": 1e400}', JSON, 422),
    ("POST", "/api/assets/cleanup", b'{"days": 99999999999999999999999}', JSON, 422),
    ("POST", "/api/assets/cleanup", b'{"days": 1.5}', JSON, 422),
    # The id segment only matches a UUID (so GET /api/assets/batch is a 405): anything else names nothing.
    ("GET", "/api/assets/not-a-uuid", None, {}, 404),
    ("GET", "/api/assets/" + "1" * 5000, None, {}, 404),
    ("GET", "/api/assets/%00", None, {}, 404),
    ("GET", "/api/assets/00000000-0000-0000-0000-000000000000", None, {}, 404),
    ("GET", f"/api/assets/{new_id()}", None, {}, 404),
    ("GET", "/media/%2e%2e", None, {}, 422),
    ("GET", "/media/", None, {}, 404),
    ("DELETE", "/api/assets", None, {}, 405),
    ("PUT", "/api/stats", None, {}, 405),
    ("GET", "/api/assets", None, {}, 405),
    ("GET", "/api/nothing-here", None, {}, 404),
    # Declares more than the limit: refused from the header, before any body is read.
    ("POST", "/api/assets", b"{}", {**JSON, "Content-Length": str(5 * 1024 * 1024)}, 413),
    ("POST", "/api/assets", b'{"url": "http://127.0.0.1:9/a.jpg"}', {"Content-Type": "text/plain"}, 422),
    ("POST", "/api/assets", b'<xml/>', {"Content-Type": "application/xml"}, 422),
]

# SQLite only: what is tested here is HTTP; both databases are covered in test_api.py.
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)





async def test_a_battery_of_malformed_requests_gets_4xx_json(make_settings: SettingsFactory) -> None:
    assert len(CASES) >= 30
    async with running_api(make_settings, run_worker=False) as api:
        for method, path, body, headers, expected in CASES:
            status, got_headers, payload = await raw_request(api.url, path, method=method, headers=headers,
                                                             body=body or b"")
            assert status == expected, (method, path, (body or b"")[:80], status, payload[:300])
            assert got_headers["content-type"] == "application/json", path
            answer = json.loads(payload)
            assert isinstance(answer["error"], str) and answer["detail"], (path, answer)
        # Nothing refused was written.
        assert (await api.cache.cache_stats()).total == 0


async def test_a_body_streamed_without_length_is_cut_at_the_limit(make_settings: SettingsFactory) -> None:
    async with running_api(make_settings, run_worker=False) as api:
        async def chunks() -> Any:
            for _ in range(100):
                yield b"[" * 65536
        got = await api.client.post("/api/assets/batch", content=chunks(), headers=JSON)
        assert got.status_code == 413 and got.json()["error"] == "body_too_large"


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20)
_bodies = st.one_of(
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["url", "urls", "values", "original_urls", "days"]), _json_values,
                    max_size=3).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)
_targets = st.sampled_from(["/api/assets", "/api/assets/batch", "/api/urls", "/api/assets/cleanup"])


@pytest.mark.slow
def test_random_bodies_never_cause_a_500(make_settings: SettingsFactory) -> None:
    from tests.support.api import api_in_thread

    with api_in_thread(make_settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(target=_targets, body=_bodies)
        def check(target: str, body: bytes) -> None:
            got = client.post(target, content=body, headers=JSON)
            assert got.status_code < 500 or got.status_code == 503, (target, body, got.status_code, got.text)
            if got.status_code >= 400:
                assert {"error", "detail"} <= set(got.json())

        check()


@pytest.mark.slow
def test_random_paths_never_cause_a_500(make_settings: SettingsFactory) -> None:
    from tests.support.api import api_in_thread

    with api_in_thread(make_settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
        @given(prefix=st.sampled_from(["/api/assets/", "/media/", "/files/", "/api/"]),
               rest=st.text(max_size=60), query=st.text(max_size=40))
        def check(prefix: str, rest: str, query: str) -> None:
            got = client.get(prefix + quote(rest, safe="/").lstrip("/"),
                             params={"exp": query, "sig": query})
            assert got.status_code < 500, (prefix, rest, got.status_code, got.text)

        check()
