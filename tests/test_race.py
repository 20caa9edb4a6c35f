"""Two workers on one asset at once: exactly one stores it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from mediacache.db.models import CacheAsset
from mediacache.domain import CacheStatus
from mediacache.errors import LeaseHeldError
from mediacache.fetching.fetch import Fetcher
from mediacache.service import MediaCache
from mediacache.worker.handler import CacheJobHandler
from tests.support.origin import Origin
from tests.support.services import SettingsFactory
from tests.support.waiting import wait_until


@pytest.mark.parametrize("round_", range(3))
async def test_two_handlers_racing_on_one_asset_store_it_once(
        make_settings: SettingsFactory, origin: Origin, round_: int) -> None:
    settings = make_settings()
    # Two independent worker stacks (engines, stores, HTTP clients), as in two processes.
    a, b = MediaCache(settings), MediaCache(settings)
    fa, fb = Fetcher(settings), Fetcher(settings)
    try:
        asset_id = await a.cache_image(origin.url(f"/big/{round_}.mp4?size={2 * 1024 * 1024}"))
        ha = CacheJobHandler(settings, a.backends.assets, a.backends.store, fa)
        hb = CacheJobHandler(settings, b.backends.assets, b.backends.store, fb)
        results = await asyncio.gather(ha.process(asset_id, final_attempt=False),
                                       hb.process(asset_id, final_attempt=False), return_exceptions=True)
        cached = [r for r in results if not isinstance(r, BaseException) and r.status == "cached"]
        refused = [r for r in results if isinstance(r, LeaseHeldError)
                   or (not isinstance(r, BaseException) and r.status == "skipped")]
        assert len(cached) == 1 and len(refused) == 1, results

        rec = await a.get_asset(asset_id)
        assert rec is not None and rec.status is CacheStatus.CACHED and rec.attempts == 1
        stored = [p for p in (settings.objects_dir / "media").rglob("*") if p.is_file()]
        assert [p.relative_to(settings.objects_dir).as_posix() for p in stored] == [rec.cache_key]
        # The loser, run again later (a BullMQ retry), finds the asset done and changes nothing.
        again = await hb.process(asset_id, final_attempt=True)
        assert again.status == "skipped"
        assert (await a.get_asset(asset_id)) == rec
    finally:
        await fa.close()
        await fb.close()
        await a.close()
        await b.close()


async def test_an_attempt_whose_lease_was_taken_over_deletes_its_own_copy(
        make_settings: SettingsFactory, origin: Origin) -> None:
    # Lease renewal every 20 s: the slow attempt cannot renew before we expire its lease by hand.
    settings = make_settings(lease_s=60.0)
    a, b = MediaCache(settings), MediaCache(settings)
    fa, fb = Fetcher(settings), Fetcher(settings)
    try:
        size = 1024 * 1024
        asset_id = await a.cache_image(origin.url(f"/slow/9.mp4?size={size}&chunk=65536&delay_ms=40"))
        slow_handler = CacheJobHandler(settings, a.backends.assets, a.backends.store, fa)
        slow = asyncio.create_task(slow_handler.process(asset_id, final_attempt=False))

        async def downloading() -> bool:
            rec = await a.get_asset(asset_id)
            return rec is not None and rec.status is CacheStatus.DOWNLOADING
        await wait_until(downloading, what="the slow attempt to claim the asset")
        # The slow attempt's lease runs out (as if its worker hung); another attempt takes over.
        async with a.backends.engine.begin() as conn:
            await conn.execute(update(CacheAsset.__table__).where(CacheAsset.__table__.c.id == asset_id)
                               .values(lease_until=datetime.now(UTC) - timedelta(seconds=1)))
        fast_handler = CacheJobHandler(settings, b.backends.assets, b.backends.store, fb)
        fast = await fast_handler.process(asset_id, final_attempt=False)
        assert fast.status == "cached"
        late = await slow
        assert late.status == "skipped" and "took the asset over" in late.reason

        rec = await a.get_asset(asset_id)
        assert rec is not None and rec.status is CacheStatus.CACHED and rec.attempts == 2
        stored = [p.relative_to(settings.objects_dir).as_posix()
                  for p in (settings.objects_dir / "media").rglob("*") if p.is_file()]
        assert stored == [rec.cache_key]
    finally:
        await fa.close()
        await fb.close()
        await a.close()
        await b.close()
