"""cache_stats() reads counters that triggers keep; they equal a count of the table after any workload."""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path

from sqlalchemy import case, func, select

from mediacache.db.models import CacheAsset
from mediacache.db.repository import AssetRepository
from mediacache.domain import CacheStatus, ErrorKind
from mediacache.service import MediaCache
from tests.support.queries import count_queries


async def _true_counts(cache: MediaCache) -> tuple[dict[str, int], dict[str, int], int]:
    t = CacheAsset.__table__
    async with cache.backends.engine.connect() as conn:
        rows = (await conn.execute(select(t.c.status, t.c.error_kind, func.count()).group_by(
            t.c.status, t.c.error_kind))).all()
        # Each object once: assets may share one (content deduplication).
        objects = (select(func.max(t.c.size_bytes).label("size")).where(t.c.status == "CACHED")
                   .group_by(t.c.cache_key).subquery())
        stored = (await conn.execute(select(func.coalesce(func.sum(objects.c.size), 0)))).scalar_one()
    by_status = {s.value: 0 for s in CacheStatus}
    kinds: dict[str, int] = {}
    for status, kind, n in rows:
        by_status[status] += n
        if status == "FAILED":
            kinds[kind or "unknown"] = kinds.get(kind or "unknown", 0) + n
    return by_status, kinds, int(stored)


async def _assert_counts_match(cache: MediaCache) -> None:
    stats = await cache.cache_stats()
    by_status, kinds, stored = await _true_counts(cache)
    assert {s: stats[s.lower()] for s in by_status} == by_status
    assert stats.total == sum(by_status.values())
    assert stats.failed_by_kind == kinds
    assert await cache.stored_bytes() == stored
    t = CacheAsset.__table__
    async with cache.backends.engine.connect() as conn:
        repeats, logical = (await conn.execute(select(
            func.coalesce(func.sum(t.c.requests - 1), 0),
            func.coalesce(func.sum(case((t.c.status == "CACHED", t.c.size_bytes), else_=0)), 0)))).one()
    assert await cache.dedup_savings() == (int(repeats), max(int(logical) - stored, 0))


async def _drive(cache: MediaCache, asset_id: uuid.UUID, rng: random.Random,
                 assets: AssetRepository | None = None) -> None:
    """One asset through a random path of the status machine, as workers, retries and cleanup move it."""
    assets = assets or cache.backends.assets
    for _attempt in range(rng.randint(1, 3)):
        claim = await assets.claim(asset_id, uuid.uuid4().hex, lease_s=30)
        if claim is None:
            return
        roll = rng.random()
        if roll < 0.5:
            await assets.mark_cached(claim, cache_key=f"media/{asset_id}/{claim.token}.jpg", content_type="image/jpeg",
                                     size_bytes=rng.randint(1, 10_000), sha256="0" * 64)
            return
        kind = rng.choice([ErrorKind.TRANSIENT, ErrorKind.NOT_FOUND, ErrorKind.FORBIDDEN])
        await assets.record_failure(claim, error="x", error_kind=kind, final=roll > 0.8)
        await asyncio.sleep(0)


async def test_counters_follow_every_change_even_concurrent_ones(cache: MediaCache) -> None:
    await _assert_counts_match(cache)
    ids = [uuid.uuid4() for _ in range(120)]
    await cache.backends.assets.insert_pending([(i, f"https://example.com/{i}.jpg") for i in ids])
    await _assert_counts_match(cache)
    rng = random.Random(7)
    await asyncio.gather(*(_drive(cache, i, random.Random(rng.random())) for i in ids))
    await _assert_counts_match(cache)

    # A retry (FAILED -> PENDING), a repair (CACHED -> PENDING), deletions: all counted.
    await cache.backends.assets.upkeep.reset_failed(10)
    cached = await cache.backends.assets.upkeep.cached_page(None, 5)
    await cache.backends.assets.upkeep.uncache([i for i, _ in cached], error="gone")
    await cache.backends.assets.delete_ids(ids[:30])
    await _assert_counts_match(cache)
    assert (await cache.cache_stats()).total == 90


async def test_statistics_read_a_few_rows_not_the_table(cache: MediaCache) -> None:
    async with count_queries(cache) as statements:
        await cache.cache_stats()
    # One statement: the counters, and the one indexed count of PENDING assets expiring soon
    # (at_risk); never a count of the whole table.
    assert len(statements) == 1, statements
    counters, at_risk = statements[0].split("UNION ALL")
    assert "cache_asset_counts" in counters and "cache_assets " not in counters.replace("cache_asset_counts", "")
    assert "source_expires_at" in at_risk and "GROUP BY" not in at_risk
    async with count_queries(cache) as statements:
        await cache.stored_bytes()
    assert len(statements) == 1 and "cache_asset_counts" in statements[0] and "cache_assets " not in statements[0]


async def test_at_risk_counts_only_pending_links_expiring_soon(cache: MediaCache) -> None:
    """cache_stats() reads at_risk in the same statement as the counters; it must still count
    exactly the PENDING assets whose link expires within 15 minutes."""
    import time

    now_s = int(time.time())
    soon = [f"https://cdn.example.com/soon/{n}.jpg?x-expires={now_s + 300}" for n in range(3)]
    later = [f"https://cdn.example.com/later/{n}.jpg?x-expires={now_s + 7200}" for n in range(2)]
    plain = ["https://cdn.example.com/plain.jpg"]
    ids = [uuid.uuid4() for _ in soon + later + plain]
    await cache.backends.assets.insert_pending(list(zip(ids, soon + later + plain, strict=True)))
    before = await cache.cache_stats()
    assert (before.at_risk, before.pending) == (3, 6)
    claim = await cache.backends.assets.claim(ids[0], uuid.uuid4().hex, lease_s=30)
    assert claim is not None
    after = await cache.cache_stats()
    assert (after.at_risk, after.pending, after.downloading) == (2, 5, 1)
    await _assert_counts_match(cache)


async def test_the_migration_counts_the_rows_that_exist(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from alembic import command
    from sqlalchemy import column, insert, table

    from mediacache.db.schema import alembic_config, upgrade_async
    from mediacache.settings import load_settings

    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'm.db'}", data_dir=tmp_path)
    await asyncio.to_thread(command.upgrade, alembic_config(settings.sqlalchemy_url), "0002")
    now = datetime.now(UTC)
    rows = [{"id": uuid.uuid4(), "original_url": "https://e.com/x", "status": status, "attempts": 1,
             "error_kind": kind, "size_bytes": size, "cache_key": f"media/{n}.jpg" if size else None,
             "created_at": now, "updated_at": now}
            for n, (status, kind, size) in enumerate([
                ("PENDING", None, None), ("CACHED", None, 100), ("CACHED", None, 50), ("FAILED", "not_found", None),
                ("FAILED", None, None)])]
    async with MediaCache(settings) as mc:
        # The table as 0002 left it: the model's later columns are not there yet.
        old = table("cache_assets", *(column(name, CacheAsset.__table__.c[name].type) for name in rows[0]))
        async with mc.backends.engine.begin() as conn:
            await conn.execute(insert(old), rows)
        await upgrade_async(settings)
        await _assert_counts_match(mc)
        stats = await mc.cache_stats()
        assert (stats.cached, stats.failed, stats.failed_by_kind) == (2, 2, {"not_found": 1, "unknown": 1})
        assert await mc.stored_bytes() == 150


async def test_a_shared_object_counts_once_until_its_last_holder_goes(cache: MediaCache) -> None:
    assets = cache.backends.assets
    ids = [uuid.uuid4() for _ in range(3)]
    await assets.insert_pending([(i, f"https://example.com/same/{n}.jpg") for n, i in enumerate(ids)])
    keys = []
    for asset_id in ids:
        claim = await assets.claim(asset_id, uuid.uuid4().hex, lease_s=30)
        assert claim is not None
        keys.append(await assets.mark_cached(claim, cache_key=f"media/{asset_id}/{claim.token}.jpg",
                                             content_type="image/jpeg", size_bytes=1000, sha256="a" * 64))
    assert len(set(keys)) == 1  # content deduplication: all three point at the first object
    assert await cache.stored_bytes() == 1000
    await _assert_counts_match(cache)
    await assets.delete_ids(ids[:2])
    assert await cache.stored_bytes() == 1000
    await assets.delete_ids(ids[2:])
    assert await cache.stored_bytes() == 0


async def test_deleting_every_holder_of_an_object_in_one_statement_takes_its_bytes_off_once(
        cache: MediaCache) -> None:
    assets = cache.backends.assets
    ids = [uuid.uuid4() for _ in range(4)]
    await assets.insert_pending([(i, f"https://example.com/once/{n}.jpg") for n, i in enumerate(ids)])
    for asset_id in ids:
        claim = await assets.claim(asset_id, uuid.uuid4().hex, lease_s=30)
        assert claim is not None
        await assets.mark_cached(claim, cache_key=f"media/{asset_id}/{claim.token}.jpg",
                                 content_type="image/jpeg", size_bytes=700, sha256="b" * 64)
    other = uuid.uuid4()
    await assets.insert_pending([(other, "https://example.com/other.jpg")])
    claim = await assets.claim(other, uuid.uuid4().hex, lease_s=30)
    assert claim is not None
    await assets.mark_cached(claim, cache_key=f"media/{other}/x.jpg", content_type="image/jpeg", size_bytes=50,
                             sha256="c" * 64)
    assert await cache.stored_bytes() == 750
    await assets.delete_ids(ids)  # one DELETE for all four holders of the shared object
    assert await cache.stored_bytes() == 50
    await _assert_counts_match(cache)


async def test_repeat_requests_are_counted_by_the_triggers(cache: MediaCache) -> None:
    base = f"https://p16-sign.tiktokcdn.com/obj/{uuid.uuid4().hex}.jpeg"
    ids = await cache.cache_images([f"{base}?x-expires={1900000000 + n}&x-signature=s{n}" for n in range(3)])
    assert len(set(ids)) == 1
    again = await cache.cache_image(f"{base}?x-expires=1900000009&x-signature=later")
    assert again == ids[0]
    avoided, _not_stored = await cache.dedup_savings()
    assert avoided == 1  # the batch's duplicates are one request; the later call is the repeat
    await _assert_counts_match(cache)


async def test_statements_that_change_many_rows_at_once_are_counted_exactly(cache: MediaCache) -> None:
    """Bulk inserts, updates and deletes, with objects shared inside one statement and across them."""
    from datetime import UTC, datetime

    from sqlalchemy import delete, insert, update

    t = CacheAsset.__table__
    now = datetime.now(UTC)
    run = uuid.uuid4().hex
    rows = []
    for n in range(200):
        status = ("CACHED", "FAILED", "PENDING", "DOWNLOADING")[n % 4]
        cached = status == "CACHED"
        rows.append({"id": uuid.uuid4(), "original_url": f"https://example.com/{run}/{n}.jpg", "status": status,
                     "attempts": 1, "error_kind": "not_found" if status == "FAILED" else None,
                     # Every CACHED row shares one of 10 objects: 5 holders an object in this one INSERT.
                     "cache_key": f"media/{run}/{n % 40}.jpg" if cached else None,
                     "size_bytes": 1000 + n % 40 if cached else None, "created_at": now, "updated_at": now})
    async with cache.backends.engine.begin() as conn:
        await conn.execute(insert(t), rows)
    await _assert_counts_match(cache)
    assert await cache.stored_bytes() == sum(1000 + k for k in range(0, 40, 4))
    async with cache.backends.engine.begin() as conn:
        # One UPDATE moves some holders off their object (back to PENDING) and others onto a new key.
        await conn.execute(update(t).where(t.c.status == "CACHED", t.c.original_url.like(f"%/{run}/1%"))
                           .values(status="PENDING", cache_key=None, size_bytes=None))
        await conn.execute(update(t).where(t.c.status == "CACHED", t.c.original_url.like(f"%/{run}/2%"))
                           .values(cache_key=f"media/{run}/moved.jpg", size_bytes=5))
        await conn.execute(update(t).where(t.c.status == "FAILED").values(status="PENDING", error_kind=None))
    await _assert_counts_match(cache)
    async with cache.backends.engine.begin() as conn:
        await conn.execute(delete(t).where(t.c.original_url.like(f"%/{run}/%"), t.c.status != "CACHED"))
    await _assert_counts_match(cache)
    async with cache.backends.engine.begin() as conn:
        await conn.execute(delete(t).where(t.c.original_url.like(f"%/{run}/%")))
    await _assert_counts_match(cache)
    assert await cache.stored_bytes() == 0


async def test_counting_goes_on_across_a_downgrade_and_upgrade_of_the_triggers(
        fresh_db_url: str, tmp_path: Path) -> None:
    """0010 swaps PostgreSQL's row triggers for statement triggers; no change is lost either way."""
    from alembic import command

    from mediacache.db.schema import alembic_config, upgrade_async
    from mediacache.settings import load_settings

    settings = load_settings(env_file=None, database_url=fresh_db_url, data_dir=tmp_path)
    await upgrade_async(settings)
    rng = random.Random(10)
    async with MediaCache(settings) as mc:
        # Below 0011 there is no mark_cached function: that stretch records without sharing.
        unshared = AssetRepository(mc.backends.engine, content_dedup=False)
        for revision in ("0009", "head"):
            ids = [uuid.uuid4() for _ in range(30)]
            await mc.backends.assets.insert_pending([(i, f"https://example.com/{i}.jpg") for i in ids])
            for asset_id in ids:
                await _drive(mc, asset_id, rng, mc.backends.assets if revision == "0009" else unshared)
            await _assert_counts_match(mc)
            await asyncio.to_thread(command.downgrade if revision == "0009" else command.upgrade,
                                    alembic_config(settings.sqlalchemy_url), revision)
            await mc.backends.assets.delete_ids(ids[:10])
            await _assert_counts_match(mc)
