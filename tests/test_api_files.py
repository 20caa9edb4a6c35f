"""GET/HEAD /files/{key}: Range requests on a video, signature and expiry checks, and path traversal."""

from __future__ import annotations

import os
import time
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from mediacache.storage.signing import sign_path
from tests.support.api import Api, raw_request
from tests.support.origin import Origin, body

VIDEO_BYTES = 1_000_003  # not a multiple of any read chunk

# SQLite only: what is tested here is HTTP; both databases are covered in test_api.py.
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)





async def _cached_video(api: Api, origin: Origin) -> tuple[str, str]:
    """Caches a generated MP4; returns its asset id and its signed /files link."""
    asset_id = (await api.client.post("/api/assets", json={"url": origin.url(f"/big/5.mp4?size={VIDEO_BYTES}")}
                                      )).json()["id"]
    await api.wait_settled([asset_id])
    link = (await api.client.get(f"/api/assets/{asset_id}")).json()["url"]
    assert link.startswith(api.url + "/files/"), link
    return asset_id, link


async def test_range_requests_return_the_right_slices(api: Api, origin: Origin) -> None:
    _, link = await _cached_video(api, origin)
    video = body("big", 5, VIDEO_BYTES)
    size = VIDEO_BYTES
    cases = [
        ("bytes=0-99", 0, 100),
        ("bytes=1000-", 1000, size),
        ("bytes=-500", size - 500, size),
        ("bytes=-99999999", 0, size),  # a suffix longer than the body is the whole body
        (f"bytes={size - 1}-{size - 1}", size - 1, size),
        (f"bytes=500000-{size + 1000}", 500000, size),  # an end past the body is cut
        ("bytes = 10 - 19", 10, 20),
    ]
    for header, start, end in cases:
        got = await api.client.get(link, headers={"Range": header})
        assert got.status_code == 206, (header, got.status_code, got.text[:200])
        assert got.content == video[start:end], header
        assert got.headers["content-range"] == f"bytes {start}-{end - 1}/{size}", header
        assert got.headers["content-length"] == str(end - start), header
        assert got.headers["content-type"] == "video/mp4"

    for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0", "bytes=99999999999999999999-"):
        refused = await api.client.get(link, headers={"Range": header})
        assert refused.status_code == 416, header
        assert refused.headers["content-range"] == f"bytes */{size}"
        assert refused.json()["error"] == "range_not_satisfiable"

    # Ignored, as RFC 9110 allows: the whole body with 200.
    for header in ("bytes=0-1,5-6", "items=0-5", "bytes=9-3", "bytes=abc", "bytes=-"):
        whole = await api.client.get(link, headers={"Range": header})
        assert whole.status_code == 200 and len(whole.content) == size, header

    full = await api.client.get(link)
    etag = full.headers["etag"]
    stale = await api.client.get(link, headers={"Range": "bytes=0-9", "If-Range": '"another-version"'})
    assert stale.status_code == 200 and len(stale.content) == size
    fresh = await api.client.get(link, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert fresh.status_code == 206 and fresh.content == video[:10]


async def test_head_gives_the_headers_without_the_body(api: Api, origin: Origin) -> None:
    _, link = await _cached_video(api, origin)
    target = link.removeprefix(api.url)
    status, headers, payload = await raw_request(api.url, target, method="HEAD")
    assert status == 200 and payload == b""
    assert headers["content-length"] == str(VIDEO_BYTES)
    assert headers["content-type"] == "video/mp4" and headers["accept-ranges"] == "bytes" and headers["etag"]
    status, headers, payload = await raw_request(api.url, target, method="HEAD", headers={"Range": "bytes=-10"})
    assert status == 206 and payload == b"" and headers["content-length"] == "10"


async def test_tampered_and_expired_links_are_403(api: Api, origin: Origin) -> None:
    asset_id, link = await _cached_video(api, origin)
    parts = urlsplit(link)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    key_path, exp, sig = parts.path, query["exp"], query["sig"]
    assert (await api.client.get(link)).status_code == 200

    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    secret = b"test-secret"
    expired = sign_path(secret, key_path.removeprefix("/files/"), ttl_s=60, now=time.time() - 3600)
    forged_with_other_secret = sign_path(b"not-the-secret", key_path.removeprefix("/files/"), ttl_s=600)
    attempts = [
        f"{key_path}?exp={exp}&sig={flipped}",                 # signature changed
        f"{key_path}?exp={int(exp) + 3600}&sig={sig}",         # expiry pushed back
        f"{key_path}x?exp={exp}&sig={sig}",                    # another key with this signature
        f"/files/media/{asset_id}/other.mp4?exp={exp}&sig={sig}",
        f"{key_path}?exp={exp}",                               # no signature
        f"{key_path}?sig={sig}",                               # no expiry
        f"{key_path}",
        f"{key_path}?exp=soon&sig={sig}",
        f"{key_path}?exp={exp}&sig=",
        expired,
        forged_with_other_secret,
    ]
    for target in attempts:
        got = await api.client.get(api.url + target)
        assert got.status_code == 403, (target, got.status_code)
        assert got.json()["error"] == "invalid_signature"
        assert "video" not in got.headers["content-type"]


async def test_no_request_reads_outside_the_storage_directory(api: Api, origin: Origin) -> None:
    await _cached_video(api, origin)
    data_dir = api.settings.data_dir
    marker = b"MEDIACACHE-SECRET-MARKER"
    (data_dir / "outside.txt").write_bytes(marker)
    # A symlink planted inside the store that points out of it.
    planted = data_dir / "objects" / "media" / "planted.jpg"
    planted.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(data_dir / "outside.txt", planted)

    secret = b"test-secret"

    def signed(key: str) -> str:
        """A valid signature for exactly `key`, as an attacker who somehow had one would send it."""
        return sign_path(secret, key, ttl_s=600).split("?", 1)[1]

    keys = ["../outside.txt", "../../etc/passwd", "media/../../outside.txt", "/etc/passwd", "media/planted.jpg",
            "..", ".tmp/x", "media/./../../outside.txt", "media\\..\\..\\outside.txt"]
    targets = [
        "/files/..%2f..%2fetc/passwd", "/files/..%2F..%2Foutside.txt", "/files/%2e%2e/%2e%2e/etc/passwd",
        "/files/%2E%2E%2F%2E%2E%2Foutside.txt", "/files/..%252f..%252fetc/passwd", "/files/../../etc/passwd",
        "/files/media/..%2f..%2f..%2foutside.txt", "/files/%2fetc%2fpasswd", "/files//etc/passwd",
        "/files/..%5c..%5coutside.txt", "/files/media/planted.jpg", "/files/%00/../outside.txt",
        "/files/..%c0%af..%c0%afetc/passwd",
    ]
    targets += [t + "?exp=9999999999&sig=AAAA" for t in list(targets)]
    targets += [f"/files/{quote(k, safe='')}?{signed(k)}" for k in keys]
    targets += [f"/files/{quote(k)}?{signed(k)}" for k in keys]
    for target in targets:
        status, _headers, payload = await raw_request(api.url, target)
        assert status in (400, 403, 404), (target, status)
        assert marker not in payload and b"root:" not in payload, target
