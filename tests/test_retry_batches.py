"""retry_failed works in bounded batches, one addBulk each, and an outage mid-way leaves nothing half-done."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from mediacache.domain import CacheStatus, ErrorKind
from mediacache.errors import QueueUnavailableError
from mediacache.service import MediaCache


async def _failed_assets(cache: MediaCache, n: int) -> list[uuid.UUID]:
    assets = cache.backends.assets
    ids = [uuid.uuid4() for _ in range(n)]
    await assets.insert_pending([(i, f"https://example.com/{i}.jpg") for i in ids])
    for asset_id in ids:
        claim = await assets.claim(asset_id, uuid.uuid4().hex, lease_s=30)
        assert claim is not None
        await assets.record_failure(claim, error="404", error_kind=ErrorKind.NOT_FOUND, final=True)
    return ids


async def _statuses(cache: MediaCache, ids: list[uuid.UUID]) -> dict[CacheStatus, int]:
    found = await cache.get_assets(ids)
    out: dict[CacheStatus, int] = {}
    for rec in found.values():
        out[rec.status] = out.get(rec.status, 0) + 1
    return out


async def test_batches_of_the_given_size_each_one_add_bulk(cache: MediaCache, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = await _failed_assets(cache, 20)
    calls: list[int] = []
    add_bulk = cache.backends.queue.add_bulk

    async def counting(items: Any) -> None:
        calls.append(len(items))
        await add_bulk(items)

    monkeypatch.setattr(cache.backends.queue, "add_bulk", counting)
    progress: list[int] = []
    assert await cache.retry_failed(batch_size=7, on_progress=progress.append) == 20
    assert calls == [7, 7, 6] and progress == [7, 7, 6]
    assert await _statuses(cache, ids) == {CacheStatus.PENDING: 20}
    states = await cache.backends.queue.job_states(ids)
    assert set(states.values()) == {"live"}


async def test_an_outage_in_a_later_batch_keeps_earlier_batches_and_restores_its_own(
        cache: MediaCache, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = await _failed_assets(cache, 15)
    add_bulk = cache.backends.queue.add_bulk
    calls = 0

    async def flaky(items: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise QueueUnavailableError("Redis did not answer (test)")
        await add_bulk(items)

    monkeypatch.setattr(cache.backends.queue, "add_bulk", flaky)
    with pytest.raises(QueueUnavailableError):
        await cache.retry_failed(batch_size=5)
    assert await _statuses(cache, ids) == {CacheStatus.PENDING: 5, CacheStatus.FAILED: 10}
    found = await cache.get_assets(ids)
    pending = [i for i, rec in found.items() if rec.status is CacheStatus.PENDING]
    # Every PENDING asset has its job; no FAILED asset is left with a waiting one.
    states = await cache.backends.queue.job_states(list(found))
    assert all(states[i] == "live" for i in pending)
    assert all(states[i] != "live" for i, rec in found.items() if rec.status is CacheStatus.FAILED)
