"""The legacy-key backfill on SQLite and PostgreSQL: converts, shares, skips, resumes, and --dry-run changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from mediacache.apptables.backfill import legacy_asset_id
from mediacache.apptables.models import KEY_COLUMNS, carousel_images, carousel_slides, carousels, posts, profiles
from mediacache.domain import CacheStatus
from mediacache.service import MediaCache
from tests.support.origin import Origin
from tests.support.processes import acli
from tests.support.services import SettingsFactory

OBJECTS = {
    "legacy/avatars/alice.jpg": b"\xff\xd8\xff\xe0" + b"a" * 1000,
    "legacy/videos/v1.mp4": b"\x00\x00\x00\x18ftypmp42" + b"v" * 5000,
    "legacy/covers/shared.webp": b"RIFF" + b"c" * 700,
    "legacy/carousel/i1.png": b"\x89PNG" + b"i" * 300,
}
MISSING = "legacy/music/gone.mp3"
UNSAFE = "../../etc/passwd"


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def make_legacy_rows(cache: MediaCache, origin: Origin) -> dict[str, int]:
    """Rows as the application wrote them before mediacache: storage keys in the `*_key` columns."""
    for key, data in OBJECTS.items():
        await cache.backends.store.put_stream(key, _chunks(data))
    p1 = await cache.save_tiktok_post(tiktok_id="7100000000000000001", username="alice")
    p2 = await cache.save_tiktok_post(tiktok_id="7100000000000000002", username="alice")
    # A new row whose cover is a cache asset id already: the backfill must not touch it.
    p3 = await cache.save_tiktok_post(tiktok_id="7100000000000000003", username="zed",
                                      cover_url=origin.url("/media/71.jpg"))
    async with cache.backends.engine.begin() as conn:
        await conn.execute(update(profiles).where(profiles.c.username == "alice")
                           .values(avatar_key="legacy/avatars/alice.jpg"))
        await conn.execute(update(posts).where(posts.c.id == p1.id).values(
            video_key="legacy/videos/v1.mp4", cover_key="legacy/covers/shared.webp", music_key=MISSING))
        await conn.execute(update(posts).where(posts.c.id == p2.id).values(
            cover_key="legacy/covers/shared.webp", video_key=UNSAFE))
        carousel_id = (await conn.execute(insert(carousels).values(
            title="old", author_avatar_key="legacy/avatars/alice.jpg", created_at=p1.created_at,
            updated_at=p1.created_at).returning(carousels.c.id))).scalar_one()
        await conn.execute(insert(carousel_images).values(
            carousel_id=carousel_id, position=0, image_key="legacy/carousel/i1.png",
            original_url="https://cdn.example.com/i1.png", width=10, height=10))
        await conn.execute(insert(carousel_slides).values(
            carousel_id=carousel_id, position=0, text="hi", background_image_key="legacy/carousel/i1.png"))
    return {"p1": p1.id, "p2": p2.id, "p3": p3.id, "carousel": carousel_id}


async def key_snapshot(cache: MediaCache) -> list[tuple[str, str, int, Any]]:
    out = []
    async with cache.backends.engine.connect() as conn:
        for table, col, _url in KEY_COLUMNS:
            for row_id, value in (await conn.execute(select(table.c.id, col).order_by(table.c.id))).all():
                out.append((table.name, col.name, row_id, value))
    return out


EXPECTED_ROWS = 7  # profile avatar, p1 video and cover, p2 cover, carousel avatar, carousel image, slide


async def test_backfill_converts_legacy_keys_into_cached_assets_once(cache: MediaCache, origin: Origin) -> None:
    ids = await make_legacy_rows(cache, origin)
    before = await key_snapshot(cache)
    p1_before = await cache.get_tiktok_post(ids["p1"])
    assert p1_before is not None and p1_before.video_url is not None

    dry = await cache.backfill_legacy_keys(dry_run=True)
    assert (dry.dry_run, dry.rows_converted, dry.keys_converted) == (True, EXPECTED_ROWS, len(OBJECTS))
    assert await key_snapshot(cache) == before
    assert (await cache.cache_stats()).total == 1  # only p3's own asset

    totals: list[int] = []
    advanced: list[int] = []
    report = await cache.backfill_legacy_keys(batch_rows=2, on_total=totals.append, on_advance=advanced.append)
    assert (report.rows_converted, report.keys_converted) == (EXPECTED_ROWS, len(OBJECTS))
    assert totals == [EXPECTED_ROWS + 2] and sum(advanced) == EXPECTED_ROWS + 2  # progress reaches the total
    problems = {(p.table, p.column, p.key): p.reason for p in report.problems}
    assert set(problems) == {("tiktok_posts", "music_key", MISSING), ("tiktok_posts", "video_key", UNSAFE)}
    assert "no object" in problems[("tiktok_posts", "music_key", MISSING)]

    after = {(t, c, i): v for t, c, i, v in await key_snapshot(cache)}
    shared = str(legacy_asset_id("legacy/covers/shared.webp"))
    assert after[("tiktok_posts", "cover_key", ids["p1"])] == after[("tiktok_posts", "cover_key", ids["p2"])] == shared
    alice = str(legacy_asset_id("legacy/avatars/alice.jpg"))
    assert after[("carousels", "author_avatar_key", ids["carousel"])] == alice
    assert after[("tiktok_posts", "music_key", ids["p1"])] == MISSING  # left alone, reported
    assert after[("tiktok_posts", "video_key", ids["p2"])] == UNSAFE
    p3_cover = next(v for t, c, i, v in before if (t, c, i) == ("tiktok_posts", "cover_key", ids["p3"]))
    assert after[("tiktok_posts", "cover_key", ids["p3"])] == p3_cover

    types = {"legacy/avatars/alice.jpg": "image/jpeg", "legacy/videos/v1.mp4": "video/mp4",
             "legacy/covers/shared.webp": "image/webp", "legacy/carousel/i1.png": "image/png"}
    for key, data in OBJECTS.items():
        rec = await cache.get_asset(legacy_asset_id(key))
        assert rec is not None and rec.status is CacheStatus.CACHED and rec.cache_key == key
        assert rec.size_bytes == len(data) and rec.content_type == types[key] and rec.sha256 is None
    assert (await cache.get_asset(legacy_asset_id("legacy/carousel/i1.png"))).original_url == (  # type: ignore[union-attr]
        "https://cdn.example.com/i1.png")
    assert (await cache.get_asset(legacy_asset_id("legacy/videos/v1.mp4"))).original_url == (  # type: ignore[union-attr]
        "legacy-key:legacy/videos/v1.mp4")

    # Reads give the same stored objects as before, now through the assets.
    base = cache.settings.public_base_url
    p1 = await cache.get_tiktok_post(ids["p1"])
    assert p1 is not None and p1.video_key == str(legacy_asset_id("legacy/videos/v1.mp4"))
    assert str(p1.video_url).startswith(f"{base}/files/legacy/videos/v1.mp4?")
    assert str(p1.profile.avatar_url).startswith(f"{base}/files/legacy/avatars/alice.jpg?")
    carousel = await cache.get_carousel(ids["carousel"])
    assert carousel is not None and str(carousel.slides[0].background_image_url).startswith(
        f"{base}/files/legacy/carousel/i1.png?")

    # Run again: nothing left to convert, nothing created, the same two rows reported.
    stats = await cache.cache_stats()
    snapshot = await key_snapshot(cache)
    again = await cache.backfill_legacy_keys()
    assert (again.rows_converted, again.keys_converted, len(again.problems)) == (0, 0, 2)
    assert await key_snapshot(cache) == snapshot
    assert await cache.cache_stats() == stats
    assert stats.cached == len(OBJECTS) and stats.total == len(OBJECTS) + 1


class Interrupted(Exception):
    pass


async def test_an_interrupted_backfill_finishes_when_run_again(cache: MediaCache, origin: Origin) -> None:
    ids = await make_legacy_rows(cache, origin)

    def stop_after_first_batch(_n: int) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        await cache.backfill_legacy_keys(batch_rows=1, on_advance=stop_after_first_batch)
    legacy_ids = {str(legacy_asset_id(key)) for key in OBJECTS}
    first = await key_snapshot(cache)
    # The first batch (one row, one transaction) is in; the rest is not yet.
    assert sum(1 for *_where, value in first if value in legacy_ids) == 1

    rest = await cache.backfill_legacy_keys(batch_rows=1)
    assert rest.rows_converted == EXPECTED_ROWS - 1
    stats = await cache.cache_stats()
    assert stats.cached == len(OBJECTS)  # one asset per key, however the work was split
    after = await key_snapshot(cache)
    assert sum(1 for *_where, value in after if value in legacy_ids) == EXPECTED_ROWS
    assert not any(value in OBJECTS for *_where, value in after)
    assert ("tiktok_posts", "cover_key", ids["p2"], str(legacy_asset_id("legacy/covers/shared.webp"))) in after


async def test_the_command_line_backfill_and_cleanup_report_what_they_do(
        cache: MediaCache, make_settings: SettingsFactory, origin: Origin) -> None:
    await make_legacy_rows(cache, origin)
    settings = make_settings()
    before = await key_snapshot(cache)

    dry = await acli(settings, "backfill-legacy-keys", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would convert {EXPECTED_ROWS} rows holding {len(OBJECTS)} legacy keys" in dry.stdout
    assert "tiktok_posts.music_key row" in dry.stdout and MISSING in dry.stdout
    assert await key_snapshot(cache) == before

    done = await acli(settings, "backfill-legacy-keys", "--batch-rows", "3")
    assert done.returncode == 0, done.stderr
    assert f"converted {EXPECTED_ROWS} rows holding {len(OBJECTS)} legacy keys" in done.stdout
    assert "converted 0 rows" in (await acli(settings, "backfill-legacy-keys")).stdout

    kept = await acli(settings, "cleanup", "--days", "0")
    assert kept.returncode == 0, kept.stderr
    assert "removed 0 assets" in kept.stdout and f"kept {len(OBJECTS)} that application rows reference" in kept.stdout
    assert all((settings.objects_dir / key).exists() for key in OBJECTS)
    removed = await acli(settings, "cleanup", "--days", "0", "--include-referenced")
    assert f"removed {len(OBJECTS)} assets" in removed.stdout
    assert not any((settings.objects_dir / key).exists() for key in OBJECTS)
