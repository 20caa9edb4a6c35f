"""Two workers on one asset at once: exactly one stores it."""

from __future__ import annotations

import asyncio

import pytest

from mediacache.domain import CacheStatus
from mediacache.fetch import Fetcher
from mediacache.handler import CacheJobHandler, LeaseHeldError
from mediacache.service import MediaCache
from tests.conftest import SettingsFactory
from tests.origin import Origin


@pytest.mark.parametrize("round_", range(3))
async def test_two_handlers_racing_on_one_asset_store_it_once(
        make_settings: SettingsFactory, origin: Origin, round_: int) -> None:
    settings = make_settings()
    # Two independent worker stacks (engines, stores, HTTP clients), as in two processes.
    a, b = MediaCache(settings), MediaCache(settings)
    fa, fb = Fetcher(settings), Fetcher(settings)
    try:
        asset_id = await a.cache_image(origin.url(f"/big/{round_}.mp4?size={2 * 1024 * 1024}"))
        ha = CacheJobHandler(settings, a.repo, a.store, fa)
        hb = CacheJobHandler(settings, b.repo, b.store, fb)
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
