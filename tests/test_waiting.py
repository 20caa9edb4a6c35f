"""Waiting for final outcomes: `cache.wait`, `GET /api/assets/{id}?wait_s=`, and the /api/events stream."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx

from mediacache.domain import CacheStatus
from mediacache.service import MediaCache
from tests.support.api import Api, running_api
from tests.support.origin import Origin
from tests.support.queries import count_queries
from tests.support.services import SettingsFactory, WorkerFactory

SLOW = "/slow/{n}.mp4?size=200000&chunk=50000&delay_ms=300"  # about 1.2 s to download


def _since(at: datetime | None) -> float:
    assert at is not None
    return (datetime.now(UTC) - at).total_seconds()


async def test_wait_returns_within_a_second_of_the_asset_becoming_final(
        cache: MediaCache, start_worker: WorkerFactory, origin: Origin) -> None:
    asset_id = await cache.cache_image(origin.url(SLOW.format(n=1)))
    waiting = asyncio.create_task(cache.wait([asset_id], timeout_s=20))
    await asyncio.sleep(0.2)  # the waiter's first read sees it PENDING; no worker runs yet
    assert not waiting.done()
    await start_worker()
    result = await waiting
    record = result.records[0]
    assert result.done and result.not_final == []
    assert record is not None and record.status is CacheStatus.CACHED
    # Well inside the 5 s fallback re-read: the worker's announcement woke the waiter.
    assert _since(record.cached_at) < 1.0


async def test_wait_with_nothing_happening_returns_after_the_timeout_not_before(
        cache: MediaCache, origin: Origin) -> None:
    asset_id = await cache.cache_image(origin.url("/media/1.jpg"))
    started = time.monotonic()
    result = await cache.wait([asset_id], timeout_s=1.5)
    elapsed_s = time.monotonic() - started
    assert 1.5 <= elapsed_s < 2.5
    assert not result.done and result.not_final == [asset_id]
    assert result.records[0] is not None and result.records[0].status is CacheStatus.PENDING


async def test_wait_counts_an_unknown_asset_as_final(cache: MediaCache) -> None:
    gone = uuid.uuid4()
    started = time.monotonic()
    result = await cache.wait([gone], timeout_s=10)
    assert time.monotonic() - started < 1.0
    assert result.done and result.records == [None]


async def test_200_waiters_on_nothing_share_a_few_queries(cache: MediaCache, origin: Origin) -> None:
    ids = await cache.cache_images([origin.url(f"/media/{i}.jpg") for i in range(200)])
    async with count_queries(cache) as statements:
        results = await asyncio.gather(*(cache.wait([i], timeout_s=2.0) for i in ids))
    assert all(r.not_final == [i] for r, i in zip(results, ids, strict=True))
    # One read for all 200 on arrival (they coalesce); no fallback read within 2 s.
    assert len(statements) <= 3, statements


async def test_200_waiters_while_assets_finish_share_the_reads(
        make_settings: SettingsFactory, start_worker: WorkerFactory, origin: Origin) -> None:
    async with MediaCache(make_settings()) as waiters, MediaCache(make_settings()) as producer:
        ids = await producer.cache_images([origin.url(f"/media/{i}.jpg?size=2000") for i in range(200)])
        async with count_queries(waiters) as statements:
            pending = [asyncio.create_task(waiters.wait([i], timeout_s=60)) for i in ids]
            await asyncio.sleep(0.1)
            await start_worker(producer, concurrency=20)
            results = await asyncio.gather(*pending)
        assert all(r.done for r in results)
        assert {r.records[0].status for r in results if r.records[0]} == {CacheStatus.CACHED}
        # Without sharing, each announcement would cost every waiter a read (200 x 200); here the
        # reads are per burst of announcements, for all waiters at once.
        assert len(statements) < 100, len(statements)


async def test_get_asset_with_wait_s_answers_when_the_asset_is_final(api: Api, origin: Origin) -> None:
    queued = await api.client.post("/api/assets", json={"url": origin.url(SLOW.format(n=2))})
    asset_id = queued.json()["id"]
    started = time.monotonic()
    answer = await api.client.get(f"/api/assets/{asset_id}", params={"wait_s": 20})
    assert answer.status_code == 200 and answer.json()["status"] == "CACHED"
    assert time.monotonic() - started < 10
    rec = await api.cache.get_asset(asset_id)
    assert rec is not None and _since(rec.cached_at) < 1.0
    assert answer.json()["url"] != origin.url(SLOW.format(n=2))


async def test_get_asset_with_wait_s_and_nothing_happening_waits_it_out(
        make_settings: SettingsFactory, origin: Origin) -> None:
    async with running_api(make_settings, run_worker=False) as api:
        queued = await api.client.post("/api/assets", json={"url": origin.url("/media/5.jpg")})
        asset_id = queued.json()["id"]
        started = time.monotonic()
        answer = await api.client.get(f"/api/assets/{asset_id}?wait_s=1")
        assert 1.0 <= time.monotonic() - started < 2.5
        assert answer.status_code == 200 and answer.json()["status"] == "PENDING"
        too_long = await api.client.get(f"/api/assets/{asset_id}?wait_s=31")
        assert too_long.status_code == 422
        missing = await api.client.get(f"/api/assets/{uuid.uuid4()}?wait_s=1")
        assert missing.status_code == 404


async def _events(lines: AsyncIterator[str], want: int) -> list[tuple[str, dict[str, str]]]:
    """Reads until `want` events came."""
    seen: list[tuple[str, dict[str, str]]] = []
    kind = ""
    async for line in lines:
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            seen.append((kind, json.loads(line.removeprefix("data: "))))
            if len(seen) >= want:
                return seen
    return seen


async def _ready(lines: AsyncIterator[str]) -> None:
    """Reads up to the stream's `: ready` comment, sent once it is subscribed."""
    async for line in lines:
        if line == ": ready":
            return


async def test_the_event_stream_shows_asset_cached_for_queued_assets(api: Api, origin: Origin) -> None:
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client, \
            client.stream("GET", "/api/events") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.aiter_lines()
        await asyncio.wait_for(_ready(lines), timeout=10)
        queued = await api.client.post("/api/assets/batch", json={"urls": [
            origin.url("/media/11.jpg"), origin.url("/status/404")]})
        cached_id, failed_id = queued.json()["ids"]
        events = await asyncio.wait_for(_events(lines, 2), timeout=30)
    by_id = {data["asset_id"]: (kind, data) for kind, data in events}
    assert by_id[cached_id][0] == "asset.cached" and by_id[cached_id][1]["status"] == "CACHED"
    assert by_id[failed_id][0] == "asset.failed" and by_id[failed_id][1]["status"] == "FAILED"


async def test_the_event_stream_filters_by_ids(api: Api, origin: Origin) -> None:
    slow = (await api.client.post("/api/assets", json={"url": origin.url(SLOW.format(n=3))})).json()["id"]
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client, \
            client.stream("GET", f"/api/events?ids={slow}") as stream:
        lines = stream.aiter_lines()
        await asyncio.wait_for(_ready(lines), timeout=10)
        await api.client.post("/api/assets", json={"url": origin.url("/media/12.jpg")})
        events = await asyncio.wait_for(_events(lines, 1), timeout=30)
    assert [(kind, data["asset_id"]) for kind, data in events] == [("asset.cached", slow)]
    bad = await api.client.get("/api/events?ids=not-an-id")
    assert bad.status_code == 422 and "ids" in bad.text
