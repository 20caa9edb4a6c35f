"""Cleanup when the store fails (the rows go, no row points nowhere, the objects are counted and left for gc),
and its pacing."""

from __future__ import annotations

import socket
import time

import pytest

from mediacache.errors import InvalidArgumentError
from mediacache.maintenance import cleanup
from mediacache.service import MediaCache
from tests.support.origin import Origin
from tests.support.services import SettingsFactory, WorkerFactory
from tests.support.waiting import wait_until


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_failed_object_delete_is_reported_and_left_for_gc(
        cache: MediaCache, start_worker: WorkerFactory, origin: Origin, make_settings: SettingsFactory) -> None:
    ids = await cache.cache_images([origin.url(f"/media/{i}.jpg?size=3000") for i in range(3)])
    await start_worker()

    async def cached() -> bool:
        return (await cache.cache_stats()).cached == 3
    await wait_until(cached, what="three cached assets")
    keys = [rec.cache_key for rec in (await cache.get_assets(ids)).values()]

    # The same database, but a store that cannot be reached: every delete fails. Rows go first
    # (objects may be shared, so an object's fate is judged once rows are gone), so the assets
    # are removed and their objects are left behind as orphans, counted as not cleaned.
    unreachable = make_settings(storage="s3", s3_endpoint_url=f"http://127.0.0.1:{_closed_port()}",
                                r2_access_key_id="k", r2_secret_access_key="s", r2_bucket_name="b")
    async with MediaCache(unreachable) as broken:
        report = await broken.cleanup_report(days=0)
    assert (report.removed, report.not_cleaned) == (3, 3)
    assert (await cache.cache_stats()).total == 0
    for key in keys:
        assert await cache.backends.store.head(key or "") is not None
    for asset_id in ids:  # removed ids resolve to the original URL given
        assert await cache.get_url(asset_id, "https://example.com/o.jpg") == "https://example.com/o.jpg"

    # Once the store answers, gc removes what cleanup could not.
    gc = await cache.collect_garbage(dry_run=False)
    assert sorted(gc.orphan_objects) == sorted(keys) and gc.deleted_objects == 3
    for key in keys:
        assert await cache.backends.store.head(key or "") is None


async def test_an_object_already_gone_is_not_an_error(
        cache: MediaCache, start_worker: WorkerFactory, origin: Origin) -> None:
    ids = await cache.cache_images([origin.url(f"/media/{i}.jpg?size=3000") for i in range(2)])
    await start_worker()

    async def cached() -> bool:
        return (await cache.cache_stats()).cached == 2
    await wait_until(cached, what="two cached assets")
    gone = await cache.get_asset(ids[0])
    assert gone is not None and gone.cache_key is not None
    await cache.backends.store.delete(gone.cache_key)  # removed behind our back

    report = await cache.cleanup_report(days=0)
    assert (report.removed, report.not_cleaned) == (2, 0)
    assert (await cache.cache_stats()).total == 0


async def test_a_busy_share_below_one_rests_after_each_batch_in_proportion_to_it(
        cache: MediaCache, start_worker: WorkerFactory, origin: Origin) -> None:
    await cache.cache_images([origin.url(f"/media/{i}.jpg?size=2000") for i in range(6)])
    await start_worker()

    async def cached() -> bool:
        return (await cache.cache_stats()).cached == 6
    await wait_until(cached, what="six cached assets")

    # Each batch's working time, measured from the end of one rest to the start of the next.
    rests: list[tuple[float, float]] = []
    resumed = time.monotonic()

    async def rest(seconds: float) -> None:
        nonlocal resumed
        rests.append((seconds, time.monotonic() - resumed))
        resumed = time.monotonic()

    b = cache.backends
    report = await cleanup.remove_settled(b.assets, b.store, b.queue, days=0, referenced=None, page_size=2,
                                          busy_share=0.25, rest=rest)
    assert report.removed == 6 and (await cache.cache_stats()).total == 0
    assert len(rests) == 3  # one per batch of two, none after the empty page that ends the run
    for rest_s, worked_s in rests:
        # A quarter of the time busy: three times the batch's time at rest.
        assert 0 < rest_s <= 3 * worked_s and rest_s >= 3 * worked_s * 0.5, (rest_s, worked_s)


@pytest.mark.parametrize("busy_share", [0, -0.5, 1.5])
async def test_a_busy_share_outside_zero_to_one_is_refused(cache: MediaCache, busy_share: float) -> None:
    with pytest.raises(InvalidArgumentError, match=r"busy_share=.*above 0 and at most 1"):
        await cache.cleanup_report(days=0, busy_share=busy_share)
