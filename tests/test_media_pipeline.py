"""Media through the whole pipeline: origin -> cache worker -> media-derive -> derive worker -> records and URLs.

Real Redis, database, store and origin; media generated with the libraries the code reads them with.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pyvips

from mediacache.domain import CacheStatus, MediaState
from mediacache.media.worker import DeriveWorker
from mediacache.service import MediaCache
from mediacache.storage.keys import derivative_key
from mediacache.worker import CacheWorker
from tests.media import makers
from tests.support.api import Api
from tests.support.origin import Origin
from tests.support.processes import acli, spawn_worker, wait_for_log
from tests.support.queries import count_queries
from tests.support.services import WorkerFactory
from tests.support.waiting import wait_until

WIDTHS = (320, 640)


@dataclass(frozen=True)
class Made:
    name: str
    path: Path
    content_type: str
    width: int | None
    height: int | None
    frames: int | None = None
    duration_s: float | None = None


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Made]:
    d = tmp_path_factory.mktemp("pipeline-media")
    return {m.name: m for m in [
        Made("jpeg", makers.jpeg(d / "p.jpg", 1200, 800), "image/jpeg", 1200, 800, 1),
        Made("png", makers.png(d / "p.png", 500, 300), "image/png", 500, 300, 1),
        Made("gif", makers.gif(d / "a.gif", 400, 300, frames=5), "image/gif", 400, 300, 5),
        Made("webp", makers.webp(d / "s.webp", 700, 700), "image/webp", 700, 700, 1),
        Made("heic", makers.heic(d / "p.heic", 900, 600), "image/heic", 900, 600, 1),
        Made("mp4", makers.mp4(d / "c.mp4", 640, 360, seconds=2.0), "video/mp4", 640, 360, None, 2.0),
        Made("mp3", makers.mp3(d / "t.mp3", seconds=2.5), "audio/mpeg", None, None, None, 2.5),
    ]}


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory, made: dict[str, Made]) -> dict[str, Made]:
    d = tmp_path_factory.mktemp("pipeline-bombs")
    return {m.name: m for m in [
        Made("png_50k", makers.png_bomb(d / "bomb.png"), "image/png", 50_000, 50_000),
        Made("gif_10k_frames", makers.gif_frames_bomb(d / "frames.gif"), "image/gif", 1, 1, 10_000),
        Made("jpeg_truncated", makers.truncated(made["jpeg"].path, d / "cut.jpg"), "image/jpeg", None, None),
    ]}


DeriveFactory = Callable[..., Awaitable[DeriveWorker]]


@pytest.fixture
async def start_deriver(cache: MediaCache) -> AsyncIterator[DeriveFactory]:
    started: list[DeriveWorker] = []

    async def factory(mc: MediaCache | None = None, **kwargs: Any) -> DeriveWorker:
        w = DeriveWorker(mc or cache, **kwargs)
        await w.start()
        started.append(w)
        return w

    yield factory
    for w in started:
        await w.stop(grace_s=5)


def _serve(origin: Origin, m: Made) -> str:
    return origin.serve_file(f"{uuid.uuid4().hex}{m.path.suffix}", m.path.read_bytes(), m.content_type)


async def _cached_and_derived(cache: MediaCache, ids: list[uuid.UUID], timeout_s: float = 90.0) -> None:
    async def done() -> bool:
        recs = [await cache.get_asset(i) for i in ids]
        return all(r is not None and r.status is CacheStatus.CACHED
                   and r.media_state not in (None, MediaState.PENDING.value) for r in recs)
    await wait_until(done, timeout_s=timeout_s, what="assets cached and derived")


async def _read(cache: MediaCache, key: str) -> bytes:
    return b"".join([chunk async for chunk in cache.backends.store.open_stream(key)])


async def _keys_of(cache: MediaCache, asset_id: uuid.UUID) -> set[str]:
    return {info.key async for info in cache.backends.store.list_keys(f"media/{asset_id}/")}


async def test_every_kind_gets_its_metadata_thumbnails_and_poster(
        cache: MediaCache, start_worker: WorkerFactory, start_deriver: DeriveFactory, origin: Origin,
        made: dict[str, Made]) -> None:
    await start_worker()
    await start_deriver()
    names = list(made)
    ids = await cache.cache_images([_serve(origin, made[n]) for n in names])
    await _cached_and_derived(cache, ids)

    for name, asset_id in zip(names, ids, strict=True):
        m, rec = made[name], await cache.get_asset(asset_id)
        assert rec is not None and rec.status is CacheStatus.CACHED, name
        assert rec.media_state == "ok", (name, rec.media_error)
        assert (rec.width, rec.height) == (m.width, m.height), name
        if m.frames is not None:
            assert rec.frames == m.frames, name
        if m.duration_s is not None:
            assert rec.duration_s is not None and abs(rec.duration_s - m.duration_s) <= 0.05, name
        if name == "mp3":
            assert rec.audio_codec == "mp3" and rec.derivatives == [] and rec.placeholder is None
            continue
        assert rec.placeholder, name
        assert m.width is not None and m.height is not None
        kind = "poster" if name == "mp4" else "thumb"
        expected = [w for w in WIDTHS if w < m.width] or [m.width]
        assert sorted(d["width"] for d in rec.derivatives) == expected, name
        for d in rec.derivatives:
            assert d["kind"] == kind and d["content_type"] == "image/webp", name
            data = await _read(cache, derivative_key(asset_id, kind, d["width"]))
            image = pyvips.Image.new_from_buffer(data, "")
            assert (image.width, image.height) == (d["width"], d["height"]), name
            # The aspect is kept (to the pixel the rounding of the height allows).
            assert abs(image.height - d["width"] * m.height / m.width) <= 1, name
        if name == "mp4":
            assert rec.video_codec == "h264" and rec.audio_codec == "aac"
            assert rec.derivatives[0]["width"] == 320 and rec.derivatives[0]["height"] == 180

    # Resolution by width: the narrowest derivative at least that wide, else the original.
    jpeg = ids[names.index("jpeg")]
    store, ttl_s = cache.backends.store, cache.settings.url_ttl_s
    original = _bare(await cache.get_url(jpeg))
    assert _bare(await cache.get_url(jpeg, width=200)) == _bare(store.url(derivative_key(jpeg, "thumb", 320),
                                                                          ttl_s=ttl_s))
    assert _bare(await cache.get_url(jpeg, width=321)) == _bare(store.url(derivative_key(jpeg, "thumb", 640),
                                                                          ttl_s=ttl_s))
    assert _bare(await cache.get_url(jpeg, width=2000)) == original
    mp4 = ids[names.index("mp4")]
    assert _bare(await cache.get_url(mp4, poster=True)) == _bare(store.url(derivative_key(mp4, "poster", 320),
                                                                           ttl_s=ttl_s))
    # A video has no thumbnails, only posters: a width alone gives the video itself.
    assert _bare(await cache.get_url(mp4, width=320)) == _bare(await cache.get_url(mp4))


async def test_get_urls_with_a_width_is_one_query(
        cache: MediaCache, start_worker: WorkerFactory, start_deriver: DeriveFactory, origin: Origin,
        made: dict[str, Made]) -> None:
    await start_worker()
    await start_deriver()
    ids = await cache.cache_images([_serve(origin, made["jpeg"]), _serve(origin, made["png"])])
    await _cached_and_derived(cache, ids)
    values: list[str | uuid.UUID | None] = [*ids, "legacy/key.jpg", None, uuid.uuid4()]
    async with count_queries(cache) as statements:
        urls = await cache.get_urls(values, [None, None, None, "https://x.test/o.jpg", "https://x.test/u.jpg"],
                                    width=320)
    assert len(statements) == 1
    assert urls[0] is not None and "/d/thumb-320.webp" in urls[0]
    assert urls[1] is not None and "/d/thumb-320.webp" in urls[1]
    assert urls[3:] == ["https://x.test/o.jpg", "https://x.test/u.jpg"]


async def test_bombs_leave_the_original_cached_and_say_why(
        cache: MediaCache, start_worker: WorkerFactory, start_deriver: DeriveFactory, origin: Origin,
        bombs: dict[str, Made], made: dict[str, Made]) -> None:
    await start_worker()
    deriver = await start_deriver()
    names = list(bombs)
    ids = await cache.cache_images([_serve(origin, bombs[n]) for n in names])
    await _cached_and_derived(cache, ids)
    states = {}
    for name, asset_id in zip(names, ids, strict=True):
        rec = await cache.get_asset(asset_id)
        assert rec is not None and rec.status is CacheStatus.CACHED, name
        assert rec.derivatives == [] and rec.media_error, name
        states[name] = rec.media_state
        assert _bare(await cache.get_url(asset_id, width=320)) == _bare(await cache.get_url(asset_id))
    assert states == {"png_50k": "too_large", "gif_10k_frames": "too_large", "jpeg_truncated": "corrupt"}
    # The worker is unharmed: the next good file gets its thumbnails.
    good = await cache.cache_image(_serve(origin, made["png"]))
    await _cached_and_derived(cache, [good])
    rec = await cache.get_asset(good)
    assert rec is not None and rec.media_state == "ok" and rec.derivatives
    assert deriver.sandbox.child_pids()


async def test_cleanup_and_gc_remove_derivatives_with_their_asset(
        cache: MediaCache, start_worker: WorkerFactory, start_deriver: DeriveFactory, origin: Origin,
        made: dict[str, Made]) -> None:
    await start_worker()
    await start_deriver()
    kept, removed = await cache.cache_images([_serve(origin, made["jpeg"]), _serve(origin, made["webp"])])
    await _cached_and_derived(cache, [kept, removed])
    kept_keys = await _keys_of(cache, kept)
    assert len(kept_keys) == 3  # the original and two thumbnails

    # A derivative object no row holds (a width no longer configured, a crashed run): gc takes it.
    stray = derivative_key(kept, "thumb", 999)
    await cache.backends.store.put_stream(stray, _chunks(b"RIFF0000WEBP"), content_type="image/webp")
    report = await cache.collect_garbage(dry_run=False)
    assert report.orphan_objects == [stray]
    assert await _keys_of(cache, kept) == kept_keys

    # Cleanup of one asset takes its derivative objects and rows; the other keeps its own.
    removed_keys = await _keys_of(cache, removed)
    assert len(removed_keys) == 3
    await _age(cache, removed)
    assert await cache.cleanup(days=1) == 1
    assert await _keys_of(cache, removed) == set()
    assert await cache.backends.media.derivatives_of([removed]) == {}
    assert await _keys_of(cache, kept) == kept_keys
    assert (await cache.collect_garbage(dry_run=True)).orphan_objects == []


async def test_derive_missing_is_idempotent(
        cache: MediaCache, make_settings: Any, start_worker: WorkerFactory, start_deriver: DeriveFactory,
        origin: Origin, made: dict[str, Made]) -> None:
    # Cached with derivatives off: as assets cached before this feature.
    async with MediaCache(make_settings(derive="off")) as old, CacheWorker(old):
        ids = await old.cache_images([_serve(origin, made["png"]), _serve(origin, made["gif"])])

        async def cached() -> bool:
            recs = [await old.get_asset(i) for i in ids]
            return all(r is not None and r.status is CacheStatus.CACHED for r in recs)
        await wait_until(cached, what="assets cached")
    for asset_id in ids:
        rec = await cache.get_asset(asset_id)
        assert rec is not None and rec.media_state is None
    assert (await cache.backends.queue.derive.counts())["waiting"] == 0

    assert await cache.derive(missing=True) == 2
    assert await cache.derive(missing=True) == 2  # still pending: the same two jobs, not two more
    assert (await cache.backends.queue.derive.counts())["waiting"] == 2
    await start_deriver()
    await _cached_and_derived(cache, ids)
    assert await cache.derive(missing=True) == 0
    assert await cache.derive(missing=True, since_days=1) == 0
    # Without --missing, every cached image is made again.
    assert await cache.derive(missing=False) == 2


async def test_media_redirect_follows_the_thumbnail_once_made(
        api: Api, start_deriver: DeriveFactory, origin: Origin, made: dict[str, Made]) -> None:
    created = await api.client.post("/api/assets", json={"url": _serve(origin, made["jpeg"])})
    asset_id = created.json()["id"]
    await api.wait_settled([asset_id])
    original = await api.cache.get_url(asset_id)

    before = await api.client.get(f"/media/{asset_id}", params={"w": 320})
    assert before.status_code == 302 and _bare(before.headers["location"]) == _bare(original)
    assert before.headers["cache-control"] == "no-store"  # ask again: the thumbnail is on its way

    await start_deriver(api.cache)
    await _cached_and_derived(api.cache, [uuid.UUID(asset_id)])
    after = await api.client.get(f"/media/{asset_id}", params={"w": 320})
    assert after.status_code == 302 and after.headers["location"].split("?")[0].endswith(
        f"/files/media/{asset_id}/d/thumb-320.webp")
    served = await api.client.get(after.headers["location"])
    assert served.status_code == 200
    assert pyvips.Image.new_from_buffer(served.content, "").width == 320
    wide = await api.client.get(f"/media/{asset_id}", params={"w": 5000})
    assert _bare(wide.headers["location"]) == _bare(original)  # no derivative covers it: the original
    body = (await api.client.get(f"/api/assets/{asset_id}")).json()
    assert (body["width"], body["height"], body["media_state"]) == (1200, 800, "ok")
    assert [d["width"] for d in body["derivatives"]] == [320, 640] and body["placeholder"]


async def test_application_records_carry_size_placeholder_and_thumbnails(
        cache: MediaCache, start_worker: WorkerFactory, start_deriver: DeriveFactory, origin: Origin,
        made: dict[str, Made]) -> None:
    await start_worker()
    await start_deriver()
    post = await cache.save_tiktok_post(
        tiktok_id="7301", username="maker", video_url=_serve(origin, made["mp4"]),
        cover_url=_serve(origin, made["jpeg"]), images=[{"url": _serve(origin, made["webp"])}])
    carousel = await cache.save_carousel(title="c", images=[{"url": _serve(origin, made["png"]), "width": 50,
                                                             "height": 30}])
    ids = [uuid.UUID(k) for k in (post.video_key, post.cover_key, post.images[0].image_key,
                                  carousel.images[0].image_key) if k]
    assert len(ids) == 4
    await _cached_and_derived(cache, ids)

    read = await cache.get_tiktok_post(post.id)
    assert read is not None and read.cover_media is not None and read.video_media is not None
    assert (read.cover_media.width, read.cover_media.height) == (1200, 800) and read.cover_media.placeholder
    assert [t["width"] for t in read.cover_media.thumbnails] == [320, 640]
    assert [p["width"] for p in read.video_media.posters] == [320] and read.video_media.thumbnails == []
    image = read.images[0]
    # No size saved by the application: the cached file's own.
    assert (image.width, image.height) == (700, 700) and image.media is not None
    assert _bare(image.media.thumbnails[0]["url"]) == _bare(
        cache.backends.store.url(derivative_key(ids[2], "thumb", 320), ttl_s=60))
    got = await cache.get_carousel(carousel.id)
    assert got is not None and got.images[0].media is not None
    assert (got.images[0].width, got.images[0].height) == (50, 30)  # what the application saved wins
    assert got.images[0].media.width == 500 and len(got.images[0].media.thumbnails) == 1
    async with count_queries(cache) as statements:
        await cache.get_carousel(carousel.id)
    assert len(statements) == 4  # carousel, images, slides, and one resolution of every slot


def _bare(url: str | None) -> str | None:
    """A URL without its query: signed links of the same object differ in their expiry second."""
    return url.split("?")[0] if url else url


async def _age(cache: MediaCache, asset_id: uuid.UUID) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from mediacache.db.columns import utcnow
    from mediacache.db.models import CacheAsset

    async with cache.backends.engine.begin() as conn:
        await conn.execute(update(CacheAsset).where(CacheAsset.id == asset_id)
                           .values(created_at=utcnow() - timedelta(days=3),
                                   last_requested_at=utcnow() - timedelta(days=3)))


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_derive_command_and_a_derive_only_worker_process(
        cache: MediaCache, make_settings: Any, origin: Origin, made: dict[str, Made], tmp_path: Path) -> None:
    settings = make_settings()
    async with MediaCache(make_settings(derive="off")) as old, CacheWorker(old):
        ids = await old.cache_images([_serve(origin, made["jpeg"]), _serve(origin, made["mp4"])])

        async def cached() -> bool:
            recs = [await old.get_asset(i) for i in ids]
            return all(r is not None and r.status is CacheStatus.CACHED for r in recs)
        await wait_until(cached, what="assets cached")

    for _ in range(2):  # the second run finds the same two still waiting, and adds no job
        queued = await acli(settings, "derive", "--missing")
        assert queued.returncode == 0 and "queued 2 derive jobs" in queued.stdout, queued
    assert (await cache.backends.queue.derive.counts())["waiting"] == 2
    log = tmp_path / "derive-worker.log"
    proc = spawn_worker(settings, log, "--queue", "derive")
    try:
        await wait_for_log(log, "derive worker ready", proc, timeout_s=60)
        assert "worker ready pid" not in log.read_text().replace("derive worker ready", "")  # no cache worker
        await _cached_and_derived(cache, ids)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0
    again = await acli(settings, "derive", "--missing")
    assert again.returncode == 0 and "queued 0 derive jobs" in again.stdout
