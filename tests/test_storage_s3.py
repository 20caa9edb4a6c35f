"""S3Store against a real SeaweedFS: streaming uploads, ranges, presigned links, config and start-up errors."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import obstore
import pytest
from obstore.store import S3Store as ObstoreS3Store

from mediacache.errors import ConfigError, StorageUnavailableError, UnsafeKeyError
from mediacache.settings import load_settings
from mediacache.storage import open_store
from mediacache.storage.s3 import S3Store
from mediacache.storage.s3_settings import s3_store_from_settings
from tests.support.s3_plugin import s3_settings_overrides
from tests.support.s3server import S3Server, list_multipart_uploads

MiB = 1024 * 1024


pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def store(s3_server: S3Server, s3_bucket: str) -> S3Store:
    return s3_store_from_settings(load_settings(**s3_settings_overrides(s3_server, s3_bucket)))


def _store_for(server: S3Server, bucket: str, **changes: Any) -> S3Store:
    args: dict[str, Any] = {"bucket": bucket, "endpoint": server.endpoint, "region": server.region,
                            "access_key_id": server.access_key_id, "secret_access_key": server.secret_access_key}
    args.update(changes)
    return S3Store(**args)


def _payload(size_bytes: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB that differ by seed
    return (block * (size_bytes // len(block) + 1))[:size_bytes]


async def _chunks(data: bytes, chunk_bytes: int = 64 * 1024, *, fail_at: int | None = None,
                  error: BaseException | None = None, stall_at: int | None = None) -> AsyncIterator[bytes]:
    """`data` in chunks, as a download would give it; can raise or stall once `fail_at`/`stall_at` bytes went."""
    for offset in range(0, len(data), chunk_bytes):
        if fail_at is not None and offset >= fail_at:
            raise error or RuntimeError("the download broke")
        if stall_at is not None and offset >= stall_at:
            await asyncio.Event().wait()  # a download that never sends another byte
        yield data[offset:offset + chunk_bytes]


async def _read(store: S3Store, key: str, **kwargs: Any) -> bytes:
    return b"".join([chunk async for chunk in store.open_stream(key, **kwargs)])


async def _etag(store: S3Store, key: str) -> str:
    meta = await obstore.head_async(store._store, key)
    return meta["e_tag"] or ""


# ---- round trips ----------------------------------------------------------------------------------

async def test_small_object_round_trip_is_one_put(store: S3Store) -> None:
    data = _payload(50 * 1024)
    assert await store.put_stream("media/a/small.jpg", _chunks(data, 4096), content_type="image/jpeg") == len(data)
    info = await store.head("media/a/small.jpg")
    assert info is not None
    assert (info.key, info.size_bytes, info.content_type) == ("media/a/small.jpg", len(data), "image/jpeg")
    assert await _read(store, "media/a/small.jpg") == data
    # A multipart ETag ends in -<parts>; a single PUT's is the plain MD5.
    assert "-" not in await _etag(store, "media/a/small.jpg")
    assert await store.delete("media/a/small.jpg") is True
    assert await store.head("media/a/small.jpg") is None


async def test_large_object_round_trip_is_multipart(store: S3Store) -> None:
    data = _payload(store.part_size_bytes * 2 + 12345, seed=1)
    written = await store.put_stream("media/b/large.mp4", _chunks(data), content_type="video/mp4")
    assert written == len(data)
    info = await store.head("media/b/large.mp4")
    assert info is not None and (info.size_bytes, info.content_type) == (len(data), "video/mp4")
    assert hashlib.sha256(await _read(store, "media/b/large.mp4")).digest() == hashlib.sha256(data).digest()
    assert "-" in await _etag(store, "media/b/large.mp4")


async def test_an_empty_stream_stores_an_empty_object(store: S3Store) -> None:
    assert await store.put_stream("media/c/empty.bin", _chunks(b"")) == 0
    info = await store.head("media/c/empty.bin")
    assert info is not None and info.size_bytes == 0
    assert await _read(store, "media/c/empty.bin") == b""


async def test_an_existing_object_is_replaced_whole(store: S3Store) -> None:
    await store.put_stream("media/d/x.png", _chunks(b"old bytes, longer than the new ones"))
    await store.put_stream("media/d/x.png", _chunks(b"new"), content_type="image/png")
    assert await _read(store, "media/d/x.png") == b"new"


async def test_range_reads(store: S3Store) -> None:
    data = _payload(1000, seed=2)
    await store.put_stream("media/e/r.bin", _chunks(data))
    assert await _read(store, "media/e/r.bin", start=10, end=20) == data[10:20]
    assert await _read(store, "media/e/r.bin", start=990) == data[990:]
    assert await _read(store, "media/e/r.bin", start=0, end=1) == data[:1]
    assert await _read(store, "media/e/r.bin", start=500, end=5000) == data[500:]
    # Past the end, or an empty range: nothing, as from a local file.
    assert await _read(store, "media/e/r.bin", start=1000) == b""
    assert await _read(store, "media/e/r.bin", start=5000, end=6000) == b""
    assert await _read(store, "media/e/r.bin", start=20, end=20) == b""


async def test_reading_a_missing_object_raises_file_not_found(store: S3Store) -> None:
    with pytest.raises(FileNotFoundError, match="media/none"):
        await _read(store, "media/none")


async def test_deleting_a_missing_object_returns_false(store: S3Store) -> None:
    assert await store.delete("media/never/was.jpg") is False


async def test_list_keys_matches_any_key_prefix(store: S3Store) -> None:
    for key in ("media/ab/1.jpg", "media/ab/2.jpg", "media/abc/3.jpg", "other/4.jpg"):
        await store.put_stream(key, _chunks(b"x" * 3))
    assert sorted([i.key async for i in store.list_keys("media/ab/")]) == ["media/ab/1.jpg", "media/ab/2.jpg"]
    assert sorted([i.key async for i in store.list_keys("media/ab")]) == [
        "media/ab/1.jpg", "media/ab/2.jpg", "media/abc/3.jpg"]
    assert len([i async for i in store.list_keys("")]) == 4
    assert {i.size_bytes async for i in store.list_keys("media/")} == {3}


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "media/../../x", "", "a//b", "media/.hidden/../x"])
async def test_unsafe_keys_are_refused(store: S3Store, key: str) -> None:
    with pytest.raises(UnsafeKeyError):
        await store.put_stream(key, _chunks(b"x"))
    with pytest.raises(UnsafeKeyError):
        await store.head(key)
    with pytest.raises(UnsafeKeyError):
        await store.delete(key)
    with pytest.raises(UnsafeKeyError):
        store.url(key, ttl_s=60)
    with pytest.raises(UnsafeKeyError):
        await _read(store, key)


# ---- all or nothing -------------------------------------------------------------------------------

class _DownloadBroke(Exception):
    pass


async def test_an_upload_whose_source_fails_half_way_leaves_nothing(
        store: S3Store, s3_server: S3Server, s3_bucket: str) -> None:
    data = _payload(20 * MiB, seed=3)
    error = _DownloadBroke("connection reset by origin")
    with pytest.raises(_DownloadBroke) as info:
        # More than two parts have been sent when the source breaks.
        await store.put_stream("media/f/broken.mp4", _chunks(data, fail_at=18 * MiB, error=error))
    assert info.value is error  # the caller's own error, not a storage error
    assert await store.head("media/f/broken.mp4") is None
    assert list_multipart_uploads(s3_server, s3_bucket) == []


async def test_a_cancelled_upload_leaves_nothing(store: S3Store, s3_server: S3Server, s3_bucket: str) -> None:
    data = _payload(40 * MiB, seed=4)
    upload = asyncio.create_task(store.put_stream("media/g/cancelled.mp4", _chunks(data, stall_at=20 * MiB)))
    deadline = time.monotonic() + 30
    # Cancel once parts are on the server, while the source is stalled (a download gone quiet).
    while not list_multipart_uploads(s3_server, s3_bucket):
        assert time.monotonic() < deadline, "the multipart upload never started"
        await asyncio.sleep(0.05)
    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload
    assert await store.head("media/g/cancelled.mp4") is None
    assert list_multipart_uploads(s3_server, s3_bucket) == []


async def test_a_timeout_around_an_upload_leaves_nothing(store: S3Store, s3_server: S3Server, s3_bucket: str) -> None:
    data = _payload(30 * MiB, seed=5)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.5):
            await store.put_stream("media/h/slow.mp4", _chunks(data, stall_at=17 * MiB))
    assert await store.head("media/h/slow.mp4") is None
    assert list_multipart_uploads(s3_server, s3_bucket) == []


# ---- links ------------------------------------------------------------------------------------------

async def test_presigned_url_gives_exactly_the_bytes(store: S3Store) -> None:
    data = _payload(300 * 1024, seed=6)
    await store.put_stream("media/i/p.webp", _chunks(data), content_type="image/webp")
    async with httpx.AsyncClient() as client:
        response = await client.get(store.url("media/i/p.webp", ttl_s=300))
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/webp"


async def test_links_signed_together_each_give_their_own_bytes(store: S3Store) -> None:
    keys = [f"media/batch/{i}.jpg" for i in range(5)] + ["media/batch/u_1-2=3+4.webp"]
    for i, key in enumerate(keys):
        await store.put_stream(key, _chunks(f"object-{i}".encode()))
    urls = store.urls(keys, ttl_s=300)
    assert len(urls) == len(keys) and store.urls([], ttl_s=300) == []
    async with httpx.AsyncClient() as client:
        for i, url in enumerate(urls):
            response = await client.get(url)
            assert response.status_code == 200, (url, response.text)
            assert response.content == f"object-{i}".encode()
    with pytest.raises(UnsafeKeyError):
        store.urls(["media/batch/0.jpg", "../etc/passwd"], ttl_s=300)


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:8333", "https://acct.r2.cloudflarestorage.com", None])
def test_links_are_byte_for_byte_what_obstore_signs(endpoint: str | None) -> None:
    # Nothing is sent: both sides compute the signature from the credentials alone.
    ours = S3Store(bucket="bkt", access_key_id="AKIDEXAMPLE", secret_access_key="wJalr/K7MDENG+bPxRfi",
                   endpoint=endpoint, region="auto" if endpoint else "eu-west-1")
    theirs = ObstoreS3Store("bkt", endpoint=ours.endpoint, region=ours.region, access_key_id="AKIDEXAMPLE",
                            secret_access_key="wJalr/K7MDENG+bPxRfi", virtual_hosted_style_request=endpoint is None,
                            client_options={"allow_http": True})
    keys = ["media/0b8f/abc.jpg", "avatars/u_1-2=3+4.webp", "legacy/Covers/A.B_c-1.png", "x"]
    for ttl_s in (1, 3600, 7 * 24 * 3600):
        for _ in range(5):  # the same second on both sides, else X-Amz-Date differs
            expected = list(obstore.sign(theirs, "GET", keys, timedelta(seconds=ttl_s)))
            mine = ours.urls(keys, ttl_s=ttl_s)
            if mine == expected:
                break
        assert mine == expected


async def test_tampered_presigned_urls_are_refused(store: S3Store) -> None:
    await store.put_stream("media/j/secret.jpg", _chunks(b"PRIVATE-BYTES"))
    await store.put_stream("media/j/other.jpg", _chunks(b"PUBLIC-BYTES"))
    url = store.url("media/j/other.jpg", ttl_s=300)
    last = url[-1]
    bad_signature = url[:-1] + ("0" if last != "0" else "1")
    other_key = url.replace("media/j/other.jpg", "media/j/secret.jpg")
    longer = url.replace("X-Amz-Expires=300", "X-Amz-Expires=600")
    async with httpx.AsyncClient() as client:
        assert (await client.get(url)).content == b"PUBLIC-BYTES"
        for tampered in (bad_signature, other_key, longer):
            response = await client.get(tampered)
            assert response.status_code == 403, (tampered, response.text)
            assert b"PRIVATE-BYTES" not in response.content


async def test_an_expired_presigned_url_is_refused(store: S3Store) -> None:
    await store.put_stream("media/k/short.jpg", _chunks(b"short-lived"))
    signed_at = int(time.time())  # X-Amz-Date has one-second resolution
    url = store.url("media/k/short.jpg", ttl_s=1)
    expired_after = signed_at + 1
    deadline = time.monotonic() + 10
    while time.time() <= expired_after + 1:  # one more second for clock rounding on the server
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    async with httpx.AsyncClient() as client:
        assert (await client.get(url)).status_code == 403
        # The same object through a fresh link still works: the refusal was the expiry.
        assert (await client.get(store.url("media/k/short.jpg", ttl_s=60))).content == b"short-lived"


def test_ttl_beyond_seven_days_is_refused(store: S3Store) -> None:
    assert store.url("media/x.jpg", ttl_s=7 * 24 * 3600)
    with pytest.raises(ConfigError, match="7 days"):
        store.url("media/x.jpg", ttl_s=7 * 24 * 3600 + 1)
    with pytest.raises(ConfigError):
        store.url("media/x.jpg", ttl_s=0)


@pytest.mark.parametrize("public_url", ["https://media.example.com", "https://media.example.com/"])
def test_public_url_mode(public_url: str) -> None:
    settings = load_settings(r2_account_id="0123456789abcdef0123456789abcdef", r2_access_key_id="k",
                             r2_secret_access_key="s", r2_bucket_name="media", r2_public_url=public_url)
    store = s3_store_from_settings(settings)
    assert store.url("media/0b1c/tok.jpg", ttl_s=3600) == "https://media.example.com/media/0b1c/tok.jpg"


# ---- configuration -----------------------------------------------------------------------------------

def test_r2_endpoint_comes_from_the_account_id() -> None:
    account = "0123456789abcdef0123456789abcdef"
    settings = load_settings(r2_account_id=account, r2_access_key_id="AKID", r2_secret_access_key="s3cr3t",
                             r2_bucket_name="media")
    store = open_store(settings)
    assert isinstance(store, S3Store)
    assert store.endpoint == f"https://{account}.r2.cloudflarestorage.com"
    assert store.region == "auto"
    # Presigned offline, path-style, with R2's "auto" region in the credential scope.
    url = urlsplit(store.url("media/a/b.jpg", ttl_s=600))
    assert (url.scheme, url.netloc) == ("https", f"{account}.r2.cloudflarestorage.com")
    assert url.path == "/media/media/a/b.jpg"
    assert "%2Fauto%2Fs3%2Faws4_request" in url.query and "X-Amz-Expires=600" in url.query
    assert "s3cr3t" not in repr(store) and "s3cr3t" not in repr(settings)


@pytest.mark.parametrize(("overrides", "region"), [
    ({"s3_endpoint_url": "http://127.0.0.1:9000"}, "us-east-1"),
    ({"s3_endpoint_url": "https://minio.example.com:9000/", "s3_region": "eu-central-1"}, "eu-central-1"),
    ({"s3_endpoint_url": "https://abc.eu.r2.cloudflarestorage.com"}, "auto"),
])
def test_other_s3_endpoints(overrides: dict[str, str], region: str) -> None:
    store = s3_store_from_settings(load_settings(
        r2_access_key_id="k", r2_secret_access_key="s", r2_bucket_name="bkt", **overrides))
    assert store.region == region
    assert store.endpoint == overrides["s3_endpoint_url"].rstrip("/")
    assert urlsplit(store.url("a/b", ttl_s=60)).path == "/bkt/a/b"  # path-style


def test_aws_s3_needs_only_a_region() -> None:
    store = s3_store_from_settings(load_settings(
        r2_access_key_id="k", r2_secret_access_key="s", r2_bucket_name="bkt", s3_region="eu-west-1"))
    url = urlsplit(store.url("a/b.jpg", ttl_s=60))
    assert (url.netloc, url.path) == ("bkt.s3.eu-west-1.amazonaws.com", "/a/b.jpg")  # virtual-hosted


def test_aws_variables_of_the_host_do_not_leak_in(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every AWS Lambda and ECS task has these; a session token must never reach R2 or a browser.
    monkeypatch.setenv("AWS_SESSION_TOKEN", "host-session-token")
    monkeypatch.setenv("AWS_ENDPOINT", "http://elsewhere.example:1")
    monkeypatch.setenv("AWS_SKIP_SIGNATURE", "true")
    store = s3_store_from_settings(load_settings(
        r2_account_id="0123456789abcdef0123456789abcdef", r2_access_key_id="k", r2_secret_access_key="s",
        r2_bucket_name="media"))
    url = store.url("a/b.jpg", ttl_s=60)
    assert "host-session-token" not in url and "Security-Token" not in url
    assert url.startswith("https://0123456789abcdef0123456789abcdef.r2.cloudflarestorage.com/media/a/b.jpg?")
    assert "X-Amz-Signature=" in url


async def test_a_host_session_token_does_not_break_real_requests(
        monkeypatch: pytest.MonkeyPatch, s3_server: S3Server, s3_bucket: str) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", "host-session-token")
    store = _store_for(s3_server, s3_bucket)
    await store.check_writable()
    await store.put_stream("a/b.jpg", _chunks(b"ok"))
    assert (await store.head("a/b.jpg")) is not None


@pytest.mark.parametrize(("overrides", "missing", "present"), [
    ({"r2_access_key_id": "k"},
     ["R2_SECRET_ACCESS_KEY", "R2_BUCKET_NAME", "R2_ACCOUNT_ID", "S3_ENDPOINT_URL"], ["R2_ACCESS_KEY_ID"]),
    ({"r2_account_id": "abc123", "r2_access_key_id": "k", "r2_bucket_name": "b"},
     ["R2_SECRET_ACCESS_KEY"], ["R2_BUCKET_NAME", "R2_ACCOUNT_ID", "R2_ACCESS_KEY_ID"]),
    ({"storage": "s3"},
     ["MEDIACACHE_STORAGE=s3", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY", "R2_BUCKET_NAME", "R2_ACCOUNT_ID"], []),
    ({"r2_access_key_id": "k", "r2_secret_access_key": "s", "r2_bucket_name": "b"},
     ["R2_ACCOUNT_ID", "S3_ENDPOINT_URL"], ["R2_BUCKET_NAME", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY"]),
])
def test_half_set_configuration_gives_one_error_naming_everything_missing(
        overrides: dict[str, str], missing: list[str], present: list[str]) -> None:
    settings = load_settings(**overrides)
    assert settings.storage_backend == "s3"
    with pytest.raises(ConfigError) as info:
        open_store(settings)
    message = str(info.value)
    listed = message.partition("missing:")[2]
    for name in missing:
        assert name in message
    for name in present:
        assert name not in listed
    assert "local directory" in message  # and the way out


def test_an_account_id_that_is_a_url_is_refused() -> None:
    with pytest.raises(ConfigError, match="R2_ACCOUNT_ID"):
        s3_store_from_settings(load_settings(
            r2_account_id="https://abc.r2.cloudflarestorage.com", r2_access_key_id="k", r2_secret_access_key="s",
            r2_bucket_name="b"))


# ---- start-up check ---------------------------------------------------------------------------------------

async def test_check_writable_passes_and_leaves_no_probe(store: S3Store) -> None:
    await store.check_writable()
    assert [i async for i in store.list_keys("")] == []


@pytest.fixture
def closed_port() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there any more
    yield port


async def test_start_up_errors_tell_credentials_bucket_and_network_apart(
        s3_server: S3Server, s3_bucket: str, closed_port: int) -> None:
    cases = {
        "bad secret": _store_for(s3_server, s3_bucket, secret_access_key="wrong"),
        "bad key id": _store_for(s3_server, s3_bucket, access_key_id="nobody"),
        "no bucket": _store_for(s3_server, s3_bucket + "-missing"),
        "unreachable": _store_for(s3_server, s3_bucket, endpoint=f"http://127.0.0.1:{closed_port}"),
    }
    messages: dict[str, str] = {}
    for name, store in cases.items():
        started = time.monotonic()
        with pytest.raises(StorageUnavailableError) as info:
            await store.check_writable()
        assert time.monotonic() - started < 10, f"{name}: the start-up check must fail fast"
        messages[name] = str(info.value)
    assert "SignatureDoesNotMatch" in messages["bad secret"] and "R2_SECRET_ACCESS_KEY" in messages["bad secret"]
    assert "InvalidAccessKeyId" in messages["bad key id"] and "R2_ACCESS_KEY_ID" in messages["bad key id"]
    assert "refused our credentials" in messages["bad secret"] and "refused our credentials" in messages["bad key id"]
    assert f"{s3_bucket}-missing" in messages["no bucket"] and "does not exist" in messages["no bucket"]
    assert "R2_BUCKET_NAME" in messages["no bucket"]
    assert "cannot be reached" in messages["unreachable"] and "connection refused" in messages["unreachable"]
    assert "S3_ENDPOINT_URL" in messages["unreachable"]
    kinds = ("refused our credentials", "does not exist", "cannot be reached")
    for name, message in messages.items():
        assert sum(kind in message for kind in kinds) == 1, (name, message)
    assert "wrong" not in messages["bad secret"]  # the secret is never echoed


async def test_storage_errors_name_key_and_bucket(s3_server: S3Server, s3_bucket: str) -> None:
    from mediacache.errors import StorageError

    store = _store_for(s3_server, s3_bucket + "-missing")
    with pytest.raises(StorageError) as info:
        await store.put_stream("media/z/1.jpg", _chunks(b"x"))
    assert "media/z/1.jpg" in str(info.value) and f"{s3_bucket}-missing" in str(info.value)
    assert "NoSuchBucket" in str(info.value) and "Debug source" not in str(info.value)


async def test_missing_keys_names_exactly_the_keys_without_an_object(store: S3Store) -> None:
    stored = [f"media/mk/{n}.jpg" for n in range(20)]
    for key in stored:
        await store.put_stream(key, _chunks(b"x"))
    absent = {f"media/mk/gone-{n}.jpg" for n in range(20)}
    assert await store.missing_keys([*stored, *absent]) == absent
    assert await store.missing_keys([]) == set()


async def test_delete_many_removes_every_key_missing_ones_included(store: S3Store) -> None:
    stored = [f"media/dm/{n}.jpg" for n in range(30)]
    for key in stored:
        await store.put_stream(key, _chunks(b"x"))
    assert await store.delete_many([*stored[:20], "media/dm/never.jpg"]) == set()
    assert sorted([i.key async for i in store.list_keys("media/dm/")]) == sorted(stored[20:])
