"""Deduplication under concurrency: one asset for one source key from many processes, and cleanup racing a
download that is about to share the object it deletes, forced into each interleaving (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import delete, text

from mediacache.db.models import CacheAsset
from mediacache.db.repository import AssetRepository
from mediacache.domain import CacheStatus
from mediacache.fetching.fetch import Fetcher
from mediacache.maintenance import cleanup
from mediacache.service import MediaCache
from mediacache.settings import Settings
from mediacache.worker.handler import CacheJobHandler
from tests.support.origin import Origin, body, sha256_of
from tests.support.queries import count_queries
from tests.support.services import SettingsFactory
from tests.support.waiting import wait_until


def _request_in_process(settings: Settings, url: str, calls: int, barrier: Any, out: Any) -> None:
    async def main() -> list[str]:
        async with MediaCache(settings) as cache:
            await cache.get_asset(uuid.uuid4())  # connect before the start line
            barrier.wait()
            ids = await asyncio.gather(*(cache.cache_image(f"{url}&x-signature=s{i}") for i in range(calls)))
            return [str(i) for i in ids]
    out.put(asyncio.run(main()))


async def test_20_concurrent_requests_from_4_processes_make_one_asset(
        make_settings: SettingsFactory, cache: MediaCache, origin: Origin) -> None:
    settings = make_settings()
    url = origin.url(f"/media/{random.randrange(10**7)}.jpg?x-expires=2000000000")
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_request_in_process, args=(settings, url, 5, barrier, out)) for _ in range(4)]
    for p in procs:
        p.start()
    try:
        results = [await asyncio.to_thread(out.get, True, 120) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
    ids = {i for r in results for i in r}
    assert len(ids) == 1 and sum(len(r) for r in results) == 20
    stats = await cache.cache_stats()
    assert stats.total == 1
    rec = await cache.get_asset(ids.pop())
    assert rec is not None and rec.requests == 20
    assert (await cache.queue_stats()).waiting == 1


# ---- cleanup against a download about to share the object it deletes ---------------------


class Gate:
    """One side stops at a named step until the test lets it go."""

    def __init__(self, step: str) -> None:
        self.step, self.reached, self.go = step, asyncio.Event(), asyncio.Event()

    async def __call__(self, step: str) -> None:
        if step == self.step:
            self.reached.set()
            await self.go.wait()


@pytest.fixture
async def handler(cache: MediaCache) -> AsyncIterator[CacheJobHandler]:
    fetcher = Fetcher(cache.settings)
    b = cache.backends
    yield CacheJobHandler(cache.settings, b.assets, b.store, fetcher)
    await fetcher.close()


async def _holder_and_sharer(cache: MediaCache, handler: CacheJobHandler,
                             origin: Origin) -> tuple[uuid.UUID, str, uuid.UUID]:
    """A CACHED asset holding an object, and a PENDING asset for the same bytes at another path."""
    n = random.randrange(10**7)
    holder = await cache.cache_image(origin.url(f"/alias/a/{n}.jpg?size=5000"))
    await handler.process(holder, final_attempt=True)
    rec = await cache.get_asset(holder)
    assert rec is not None and rec.status is CacheStatus.CACHED and rec.cache_key
    sharer = await cache.cache_image(origin.url(f"/alias/b/{n}.jpg?size=5000"))
    return holder, rec.cache_key, sharer


async def _no_cached_asset_points_nowhere(cache: MediaCache) -> list[str]:
    missing = (await cache.reconcile(min_age_s=3600, check_objects=True)).missing_objects
    assert missing == []
    return [info.key async for info in cache.backends.store.list_keys("media/")]


async def _run_cleanup(cache: MediaCache, ids: list[uuid.UUID],
                       pause: Callable[[str], Awaitable[None]] | None = None) -> int:
    """The removal step of cleanup and trim, on chosen assets (cleanup would pick the sharer too)."""
    b = cache.backends
    return (await cleanup.remove_assets(b.assets, b.store, b.queue, ids, pause=pause)).assets


async def test_cleanup_deletes_rows_then_a_download_would_share(
        cache: MediaCache, handler: CacheJobHandler, origin: Origin) -> None:
    holder, key, sharer = await _holder_and_sharer(cache, handler, origin)
    gate = Gate("rows_deleted")
    cleaning = asyncio.create_task(_run_cleanup(cache, [holder], gate))
    await asyncio.wait_for(gate.reached.wait(), 30)
    # The holder's row is gone, its object not yet: the download must not take that object.
    await handler.process(sharer, final_attempt=True)
    gate.go.set()
    assert await cleaning == 1
    rec = await cache.get_asset(sharer)
    assert rec is not None and rec.status is CacheStatus.CACHED and rec.cache_key != key
    assert await _no_cached_asset_points_nowhere(cache) == [rec.cache_key]


async def test_a_download_stores_then_cleanup_runs_then_it_records(
        cache: MediaCache, handler: CacheJobHandler, origin: Origin) -> None:
    holder, key, sharer = await _holder_and_sharer(cache, handler, origin)
    handler.pause = gate = Gate("stored")
    downloading = asyncio.create_task(handler.process(sharer, final_attempt=True))
    await asyncio.wait_for(gate.reached.wait(), 30)
    # Uploaded its own copy, about to look for an object with the same bytes: cleanup runs whole.
    assert await _run_cleanup(cache, [holder]) == 1
    assert await cache.backends.store.head(key) is None
    gate.go.set()
    await downloading
    rec = await cache.get_asset(sharer)
    assert rec is not None and rec.status is CacheStatus.CACHED and rec.cache_key != key
    assert await _no_cached_asset_points_nowhere(cache) == [rec.cache_key]


async def test_a_download_shares_then_cleanup_keeps_the_object(
        cache: MediaCache, handler: CacheJobHandler, origin: Origin) -> None:
    holder, key, sharer = await _holder_and_sharer(cache, handler, origin)
    gate = Gate("rows_deleted")
    await handler.process(sharer, final_attempt=True)
    rec = await cache.get_asset(sharer)
    assert rec is not None and rec.cache_key == key
    cleaning = asyncio.create_task(_run_cleanup(cache, [holder], gate))
    await asyncio.wait_for(gate.reached.wait(), 30)
    gate.go.set()
    assert await cleaning == 1
    assert await _no_cached_asset_points_nowhere(cache) == [key]
    assert await _run_cleanup(cache, [sharer]) == 1
    assert await _no_cached_asset_points_nowhere(cache) == []


async def test_a_download_sharing_while_cleanup_deletes_its_holder_uncommitted(
        cache: MediaCache, handler: CacheJobHandler, origin: Origin, db_url: str) -> None:
    """The hardest order: the sharing statement starts while cleanup's delete of the holder is not yet
    committed. On PostgreSQL it waits on the holder's row lock and then finds the row gone; SQLite
    makes it wait for the writer. Either way it keeps its own copy."""
    holder, key, sharer = await _holder_and_sharer(cache, handler, origin)
    handler.pause = gate = Gate("stored")
    downloading = asyncio.create_task(handler.process(sharer, final_attempt=True))
    await asyncio.wait_for(gate.reached.wait(), 30)
    table = CacheAsset.__table__
    async with cache.backends.engine.connect() as conn:
        tx = await conn.begin()
        keys = (await conn.execute(delete(table).where(table.c.id == holder).returning(table.c.cache_key))).scalars()
        deleted = set(keys.all())
        gate.go.set()
        if db_url.startswith("postgresql"):
            async def blocked() -> bool:
                async with cache.backends.engine.connect() as probe:
                    n = (await probe.execute(text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND pid <> pg_backend_pid() AND (query LIKE 'UPDATE cache_assets%' "
                        "OR query LIKE '%mediacache_mark_cached(%')"))).scalar_one()
                return bool(n)
            await wait_until(blocked, what="the sharing UPDATE waiting on the holder's row lock")
        else:
            await asyncio.sleep(0)  # let the download reach SQLite's write lock
        await tx.commit()
    await downloading
    # The rest of cleanup: each object no row holds goes.
    assert await cleanup.delete_unheld(cache.backends.assets, cache.backends.store, deleted) == 0
    rec = await cache.get_asset(sharer)
    assert rec is not None and rec.status is CacheStatus.CACHED and rec.cache_key != key
    assert await _no_cached_asset_points_nowhere(cache) == [rec.cache_key]


# ---- a delivery killed after recording its asset, and the delivery after it --------------


class Killed(Exception):
    """Raised where a SIGKILL would stop the job: nothing after that step of it runs."""


def _killed_at(step: str) -> Callable[[str], Awaitable[None]]:
    async def pause(at: str) -> None:
        if at == step:
            raise Killed(step)
    return pause


async def _bucket(cache: MediaCache) -> tuple[int, int]:
    """(objects no asset owns, assets whose object is missing), as `mediacache usage --check-bucket`."""
    bucket = (await cache.usage(check_bucket=True)).bucket
    assert bucket is not None
    return bucket.orphan_objects, bucket.missing_objects


async def test_the_next_delivery_deletes_the_copy_a_killed_one_made_surplus_by_sharing(
        cache: MediaCache, handler: CacheJobHandler, origin: Origin) -> None:
    _holder, key, sharer = await _holder_and_sharer(cache, handler, origin)
    handler.pause = _killed_at("recorded")
    with pytest.raises(Killed):
        await handler.process(sharer, final_attempt=True)
    handler.pause = None
    rec = await cache.get_asset(sharer)
    assert rec is not None and rec.status is CacheStatus.CACHED and rec.cache_key == key
    assert await _bucket(cache) == (1, 0)  # its own copy, which no asset owns

    # The job's next delivery (BullMQ's, after the dead worker's lock ran out).
    outcome = await handler.process(sharer, final_attempt=True)
    assert outcome.status == "skipped"
    assert await _no_cached_asset_points_nowhere(cache) == [key]
    assert await _bucket(cache) == (0, 0)


@pytest.mark.parametrize("merged", [False, True], ids=["killed-before-merging", "killed-after-merging"])
async def test_the_next_delivery_finishes_the_merge_of_copies_recorded_at_the_same_moment(
        cache: MediaCache, handler: CacheJobHandler, origin: Origin, merged: bool) -> None:
    """Two downloads of the same bytes that record at the same moment (on PostgreSQL neither sees
    the other) each keep a copy until one of them merges them. Killed before the merge, or after its
    UPDATE and before its deletes: the copies stay until the job is delivered again."""
    b = cache.backends
    unshared = CacheJobHandler(cache.settings, AssetRepository(b.engine, content_dedup=False), b.store,
                               handler.fetcher)
    n = random.randrange(10**7)
    ids = [await cache.cache_image(origin.url(f"/alias/{side}/{n}.mp4?size=300000")) for side in "ab"]
    for asset_id in ids:
        await unshared.process(asset_id, final_attempt=True)
    records = await cache.get_assets(ids)
    keys = sorted(str(r.cache_key) for r in records.values())
    assert len(set(keys)) == 2 and len({r.sha256 for r in records.values()}) == 1
    if merged:
        rec = records[ids[0]]
        assert rec.sha256 is not None and rec.size_bytes is not None
        assert await b.assets.converge_copies(rec.sha256, rec.size_bytes) == (keys[0], {keys[1]})
        assert await _bucket(cache) == (1, 0)
    # The delivery again of the job whose asset holds the object that stays, so that the surplus
    # copy is under the other asset's prefix.
    winner = next(i for i in ids if str(records[i].cache_key) == keys[0])
    outcome = await handler.process(winner, final_attempt=True)
    assert outcome.status == "skipped"
    assert await _no_cached_asset_points_nowhere(cache) == [keys[0]]
    assert {r.cache_key for r in (await cache.get_assets(ids)).values()} == {keys[0]}
    assert await _bucket(cache) == (0, 0)


# SQLite runs writers one at a time: its recordings cannot overlap.
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_download_recording_while_another_of_the_same_bytes_records_waits_and_shares(
        cache: MediaCache, handler: CacheJobHandler, origin: Origin) -> None:
    """On PostgreSQL the recordings of the same bytes take turns (migration 0011): one that starts
    while another is recording, not yet committed, waits for it and then takes its object, so no
    second copy is kept and none needs merging."""
    b = cache.backends
    n = random.randrange(10**7)
    first = await cache.cache_image(origin.url(f"/alias/a/{n}.jpg?size=5000"))
    second = await cache.cache_image(origin.url(f"/alias/b/{n}.jpg?size=5000"))
    # The first download, by hand: claimed, its copy stored, its recording begun and not committed.
    token = uuid.uuid4().hex
    assert await b.assets.claim(first, token, lease_s=60) is not None
    key = f"media/{first}/{token}.jpg"

    async def chunks() -> AsyncIterator[bytes]:
        yield body("media", n, 5000)
    await b.store.put_stream(key, chunks())
    async with b.engine.connect() as conn:
        tx = await conn.begin()
        recorded = (await conn.execute(text(
            "SELECT mediacache_mark_cached(:id, :token, :key, 'image/jpeg', 5000, :sha, now())"),
            {"id": first, "token": token, "key": key, "sha": sha256_of("media", n, 5000)})).scalar_one()
        assert recorded == key
        downloading = asyncio.create_task(handler.process(second, final_attempt=True))

        async def waiting_its_turn() -> bool:
            if downloading.done():
                # Ended without waiting: say how (its exception, or the outcome) instead of timing out.
                raise AssertionError(f"the second download ended before it waited: {downloading.result()!r}")
            async with b.engine.connect() as probe:
                return bool((await probe.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND wait_event = 'advisory' AND pid <> pg_backend_pid() "
                    "AND query LIKE '%mediacache_mark_cached(%'"))).scalar_one())
        await wait_until(waiting_its_turn, what="the second recording waiting for the first")
        await tx.commit()
    outcome = await downloading
    assert outcome.status == "cached" and outcome.cache_key == key
    rec = await cache.get_asset(second)
    assert rec is not None and rec.cache_key == key
    assert await _no_cached_asset_points_nowhere(cache) == [key]  # its own copy deleted, nothing to merge


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_download_with_deduplication_on_sends_two_statements(
        cache: MediaCache, handler: CacheJobHandler, origin: Origin) -> None:
    """The claim and the recording: with recordings taking turns there is no merge to run after."""
    n = random.randrange(10**7)
    first = await cache.cache_image(origin.url(f"/alias/a/{n}.jpg?size=5000"))
    second = await cache.cache_image(origin.url(f"/alias/b/{n}.jpg?size=5000"))
    for asset_id in (first, second):
        async with count_queries(cache) as statements:
            assert (await handler.process(asset_id, final_attempt=True)).status == "cached"
        assert len(statements) == 2, statements
        assert "mediacache_mark_cached" in statements[1]
    records = await cache.get_assets([first, second])
    assert len({r.cache_key for r in records.values()}) == 1  # the second took the first's object
