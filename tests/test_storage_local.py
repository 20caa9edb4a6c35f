"""Local storage: keys cannot leave the root, writes are atomic, links are signed and expire."""

from __future__ import annotations

import asyncio
import base64
import hmac
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from mediacache.errors import UnsafeKeyError
from mediacache.storage.keys import check_key
from mediacache.storage.local import LocalStore
from mediacache.storage.mac import hmac_sha256
from mediacache.storage.signing import _mac, sign_path, verify

SECRET = b"k" * 32


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "objects", public_base_url="http://127.0.0.1:8000/", signing_key=SECRET)


async def _chunks(parts: list[bytes], fail_after: int | None = None) -> AsyncIterator[bytes]:
    for i, part in enumerate(parts):
        if fail_after is not None and i == fail_after:
            raise ConnectionResetError("origin went away")
        yield part
        await asyncio.sleep(0)


@pytest.mark.parametrize("key", [
    "../etc/passwd", "media/../../x", "/abs/path", "media//x", "media/./x", ".tmp/x", "a\\..\\b", "",
    "media/x\x00y", "media/%2e%2e/x", "media/ x", "-rf", "x" * 2000,
])
async def test_unsafe_keys_are_refused(store: LocalStore, key: str) -> None:
    with pytest.raises(UnsafeKeyError):
        await store.put_stream(key, _chunks([b"x"]))
    with pytest.raises(UnsafeKeyError):
        store.url(key, ttl_s=60)
    assert not any(p.is_file() for p in store.root.rglob("*")) if store.root.exists() else True


async def test_symlink_out_of_the_root_is_refused(store: LocalStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    store.root.mkdir(parents=True)
    (store.root / "media").symlink_to(outside)
    with pytest.raises(UnsafeKeyError):
        await store.put_stream("media/x.jpg", _chunks([b"x"]))
    assert list(outside.iterdir()) == []


async def test_put_head_stream_delete_round_trip(store: LocalStore) -> None:
    parts = [bytes([i]) * 700_000 for i in range(5)]
    assert await store.put_stream("media/a/b.jpg", _chunks(parts), content_type="image/jpeg") == 3_500_000
    info = await store.head("media/a/b.jpg")
    assert info is not None and info.size_bytes == 3_500_000
    data = b"".join([c async for c in store.open_stream("media/a/b.jpg")])
    assert data == b"".join(parts)
    part = b"".join([c async for c in store.open_stream("media/a/b.jpg", start=699_990, end=700_010)])
    assert part == b"\x00" * 10 + b"\x01" * 10
    assert await store.delete("media/a/b.jpg") is True
    assert await store.delete("media/a/b.jpg") is False
    assert await store.head("media/a/b.jpg") is None


async def test_failed_or_cancelled_write_leaves_nothing(store: LocalStore) -> None:
    with pytest.raises(ConnectionResetError):
        await store.put_stream("media/x.jpg", _chunks([b"a" * 600_000] * 4, fail_after=3))
    assert await store.head("media/x.jpg") is None

    started = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        while True:
            started.set()
            yield b"b" * 65536
            await asyncio.sleep(0)

    task = asyncio.create_task(store.put_stream("media/y.jpg", endless()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.head("media/y.jpg") is None
    assert [p for p in store.root.rglob("*") if p.is_file()] == []


async def test_an_existing_object_is_replaced_whole(store: LocalStore) -> None:
    await store.put_stream("media/z.jpg", _chunks([b"old"]))
    with pytest.raises(ConnectionResetError):
        await store.put_stream("media/z.jpg", _chunks([b"new"] * 3, fail_after=2))
    assert (store.root / "media/z.jpg").read_bytes() == b"old"


def test_signed_urls_verify_and_tampering_or_expiry_fails(store: LocalStore) -> None:
    url = store.url("media/a/b.jpg", ttl_s=60)
    parts = urlsplit(url)
    assert url.startswith("http://127.0.0.1:8000/files/media/a/b.jpg?")
    key = unquote(parts.path.removeprefix("/files/"))
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert verify(SECRET, key, q["exp"], q["sig"])
    assert not verify(SECRET, "media/a/c.jpg", q["exp"], q["sig"])
    assert not verify(SECRET, key, str(int(q["exp"]) + 1), q["sig"])
    assert not verify(SECRET, key, q["exp"], q["sig"][:-1] + ("A" if q["sig"][-1] != "A" else "B"))
    assert not verify(b"other", key, q["exp"], q["sig"])
    assert not verify(SECRET, key, q["exp"], q["sig"], now=int(q["exp"]) + 1)
    assert not verify(SECRET, key, None, q["sig"]) and not verify(SECRET, key, "soon", q["sig"])


@pytest.mark.parametrize("secret", [b"", b"s", SECRET, b"x" * 64, b"y" * 65, bytes(range(256))])
def test_the_mac_is_hmac_sha256_for_any_secret_length(secret: bytes) -> None:
    for key, exp in (("media/a/b.jpg", 1), ("avatars/u_1-2=3+4.webp", 1790000000), ("caf\u00e9/\udcff", 0)):
        message = f"{key}\n{exp}".encode("utf-8", "surrogatepass")
        expected = hmac.digest(secret, message, "sha256")
        assert hmac_sha256(secret, message) == expected
        assert _mac(secret, key, exp) == base64.urlsafe_b64encode(expected).rstrip(b"=").decode()
    # Another key after these (the padded states are cached per key).
    assert hmac_sha256(secret + b"!", b"m") == hmac.digest(secret + b"!", b"m", "sha256")


def test_many_urls_at_once_are_the_same_as_one_at_a_time(store: LocalStore) -> None:
    keys = ["media/a/b.jpg", "avatars/u_1-2=3+4.webp", "tiktok/videos/123.mp4"]
    for _ in range(5):  # the same second on both sides, else the expiry differs
        batch, single = store.urls(keys, ttl_s=60), [store.url(k, ttl_s=60) for k in keys]
        if batch == single:
            break
    assert batch == single
    assert "/files/avatars/u_1-2%3D3%2B4.webp?" in batch[1]
    assert sign_path(SECRET, "media/a/b.jpg", ttl_s=60, now=1000) == sign_path(SECRET, "media/a/b.jpg", ttl_s=0,
                                                                                 now=1060)
    assert store.urls([], ttl_s=60) == []
    with pytest.raises(UnsafeKeyError):
        store.urls(["media/a/b.jpg", "../etc/passwd"], ttl_s=60)


def test_check_key_accepts_the_asset_key_scheme_and_legacy_keys() -> None:
    for key in ("media/0b8f/abc.jpg", "tiktok/videos/123.mp4", "avatars/u_1-2=3+4.webp"):
        assert check_key(key) == key


async def test_list_keys_matches_any_key_prefix(store: LocalStore) -> None:
    """As on S3: a prefix need not end at a folder; one that does is listed without the rest."""
    for key in ("media/ab/1.jpg", "media/ab/2.jpg", "media/abc/3.jpg", "other/4.jpg"):
        await store.put_stream(key, _chunks([b"x" * 3]))
    assert sorted([i.key async for i in store.list_keys("media/ab/")]) == ["media/ab/1.jpg", "media/ab/2.jpg"]
    assert sorted([i.key async for i in store.list_keys("media/ab")]) == [
        "media/ab/1.jpg", "media/ab/2.jpg", "media/abc/3.jpg"]
    assert sorted([i.key async for i in store.list_keys("me")]) == [
        "media/ab/1.jpg", "media/ab/2.jpg", "media/abc/3.jpg"]
    assert len([i async for i in store.list_keys("")]) == 4
    assert [i async for i in store.list_keys("media/none/")] == []
    assert {i.size_bytes async for i in store.list_keys("media/")} == {3}


async def test_delete_removes_the_folders_it_empties_and_no_more(store: LocalStore) -> None:
    for key in ("media/a/1.jpg", "media/a/2.jpg", "media/b/1.jpg"):
        await store.put_stream(key, _chunks([b"x"]))
    assert await store.delete("media/a/1.jpg")
    assert (store.root / "media/a").is_dir()  # still holds 2.jpg
    assert await store.delete("media/a/2.jpg")
    assert not (store.root / "media/a").exists() and (store.root / "media/b").is_dir()
    assert await store.delete("media/b/1.jpg")
    assert not (store.root / "media").exists() and store.root.is_dir()


async def test_writes_racing_deletes_in_one_folder_all_land(store: LocalStore) -> None:
    # Each delete may remove the folder that a concurrent write has just made for its file.
    await store.put_stream("media/r/0.jpg", _chunks([b"x"]))

    async def write_then_delete(n: int) -> None:
        await store.put_stream(f"media/r/{n}.jpg", _chunks([bytes([n % 256])]))
        assert await store.delete(f"media/r/{n - 1}.jpg") in (True, False)

    keep = [f"media/r/k{n}.jpg" for n in range(50)]
    await asyncio.gather(*(write_then_delete(n) for n in range(1, 50)),
                         *(store.put_stream(k, _chunks([b"k"])) for k in keep))
    for k in keep:
        assert await store.head(k) is not None, k


async def test_missing_keys_names_exactly_the_keys_without_an_object(store: LocalStore) -> None:
    stored = [f"media/mk/{n}.jpg" for n in range(20)]
    for key in stored:
        await store.put_stream(key, _chunks([b"x"]))
    # A folder is no object, as for head().
    absent = {f"media/mk/gone-{n}.jpg" for n in range(20)} | {"media/mk"}
    assert await store.missing_keys([*stored, *absent]) == absent


async def test_delete_many_removes_every_key_and_names_those_it_could_not(store: LocalStore) -> None:
    stored = [f"media/dm/{n}.jpg" for n in range(10)]
    for key in stored:
        await store.put_stream(key, _chunks([b"x"]))
    (store.root / "media" / "dm" / "folder.jpg").mkdir()  # unlink fails on a folder
    failed = await store.delete_many([*stored[:6], "media/dm/never.jpg", "media/dm/folder.jpg"])
    assert failed == {"media/dm/folder.jpg"}
    assert sorted(p.name for p in (store.root / "media" / "dm").iterdir()) == sorted(
        ["folder.jpg", *(k.rsplit("/", 1)[1] for k in stored[6:])])
