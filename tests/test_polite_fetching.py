"""Polite fetching in the worker: host pauses and breaker, expiry order, expired links, Redis outages, fresh links."""

from __future__ import annotations

import itertools
import logging
import random
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis

from mediacache.domain import CacheStatus
from mediacache.errors import AssetStateError, ConfigError, InvalidURLError, RecordNotFoundError
from mediacache.fetching.host_client import build_limiter
from mediacache.service import MediaCache
from mediacache.settings import load_settings
from mediacache.worker.politeness import Politeness
from tests.support.origin import Origin
from tests.support.polite_origin import PoliteOrigin
from tests.support.processes import PrivateRedis, acli
from tests.support.services import SettingsFactory, WorkerFactory
from tests.support.waiting import wait_until

FINAL = (CacheStatus.CACHED, CacheStatus.FAILED)


@pytest.fixture
def host_a() -> Iterator[PoliteOrigin]:
    """An origin reached as host 127.0.0.2, apart from the shared one on 127.0.0.1."""
    server = PoliteOrigin(host="127.0.0.2")
    server.start()
    yield server
    server.stop()


async def _all_final(cache: MediaCache, ids: Sequence[uuid.UUID]) -> bool:
    records = await cache.get_assets(ids)
    return len(records) == len(ids) and all(r.status in FINAL for r in records.values())


def _n() -> int:
    return random.randrange(10**6, 10**8)


async def test_a_429_pauses_the_host_for_every_worker(make_settings: SettingsFactory, host_a: PoliteOrigin,
                                                      start_worker: WorkerFactory) -> None:
    settings = make_settings(host_limits="127.0.0.2=20/s:4", job_attempts=5)
    first, second = MediaCache(settings), MediaCache(settings)
    try:
        await start_worker(first, concurrency=4)
        await start_worker(second, concurrency=4)
        host_a.throttle_next, host_a.retry_after_s = 1, 3
        base = _n()
        ids = await first.cache_images([host_a.url(f"/media/{base + i}.jpg?size=2048") for i in range(20)])
        await wait_until(lambda: _all_final(first, ids), timeout_s=40, what="host A's assets")
        records = await first.get_assets(ids)
        assert {r.status for r in records.values()} == {CacheStatus.CACHED}
        assert host_a.throttled_at, "the origin never throttled"
        t429 = host_a.throttled_at[0]
        during = [t for t in host_a.hits("/media/") if t429 + 0.3 < t < t429 + 2.9]
        assert during == [], f"{len(during)} requests reached host A during its Retry-After"
        # Only the throttled job spent an attempt more; the others waited for free.
        assert sum(r.attempts for r in records.values()) == len(ids) + 1
    finally:
        await first.close()
        await second.close()


async def test_failures_open_the_breaker_then_one_probe_per_interval(
        make_settings: SettingsFactory, host_a: PoliteOrigin, start_worker: WorkerFactory) -> None:
    settings = make_settings(host_limits="127.0.0.2=10/s:1", host_breaker="3/10s:1s", job_attempts=30,
                             backoff_ms=100)
    mc = MediaCache(settings)
    try:
        await start_worker(mc, concurrency=4)
        host_a.dropping = True
        base = _n()
        ids = await mc.cache_images([host_a.url(f"/media/{base + i}.jpg?size=2048") for i in range(6)])

        async def probed_a_few_times() -> bool:
            return len(host_a.dropped_at or []) >= 7
        await wait_until(probed_a_few_times, timeout_s=30, what="three failures and four probes")
        states = {h.host: h for h in await mc.host_states()}
        assert states["127.0.0.2"].breaker in ("open", "half_open")
        assert states["127.0.0.2"].breaker_trips >= 1
        host_a.dropping = False
        dropped = list(host_a.dropped_at or [])
        after_open = dropped[3:]
        gaps = [b - a for a, b in itertools.pairwise(after_open)]
        assert all(g >= 0.9 for g in gaps), f"probes closer than the 1 s open interval: {gaps}"
        await wait_until(lambda: _all_final(mc, ids), timeout_s=30, what="host A back")
        records = await mc.get_assets(ids)
        assert {r.status for r in records.values()} == {CacheStatus.CACHED}
        # Every spent attempt is a request that reached A and failed, or the final success: waiting
        # behind the open breaker spent none.
        assert sum(r.attempts for r in records.values()) == len(ids) + len(host_a.dropped_at or [])
    finally:
        await mc.close()


async def test_waiting_jobs_run_soonest_expiring_first(cache: MediaCache, start_worker: WorkerFactory,
                                                       origin: Origin) -> None:
    now = int(time.time())
    ranks = list(range(50))
    random.Random(7).shuffle(ranks)
    base = _n()
    paths = [f"/media/{base + i}.jpg" for i in range(50)]
    urls = [origin.url(f"{p}?size=1024&x-expires={now + 310 + 30 * rank}")
            for p, rank in zip(paths, ranks, strict=True)]
    ids = await cache.cache_images(urls)
    expired_path = f"/media/{base + 99}.jpg"
    expired = await cache.cache_image(origin.url(f"{expired_path}?size=1024&x-expires={now - 60}"))
    record = await cache.get_asset(ids[0])
    assert record is not None and record.source_expires_at is not None
    assert int(record.source_expires_at.timestamp()) == now + 310 + 30 * ranks[0]
    assert (await cache.cache_stats()).at_risk == sum(1 for r in ranks if 310 + 30 * r < 900)

    await start_worker(concurrency=1)
    await wait_until(lambda: _all_final(cache, [*ids, expired]), timeout_s=60, what="51 assets")
    seen = [p.split("?")[0] for _, p in list(origin.requests) if p.split("?")[0] in set(paths) | {expired_path}]
    expected = [p for _, p in sorted(zip(ranks, paths, strict=True))]
    assert seen == expected
    gone = await cache.get_asset(expired)
    assert gone is not None and gone.status is CacheStatus.FAILED and gone.error_kind == "expired"
    assert gone.attempts == 1 and expired_path not in seen


async def test_a_redis_outage_of_the_limiter_makes_jobs_wait(
        make_settings: SettingsFactory, cache: MediaCache, start_worker: WorkerFactory, origin: Origin,
        private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings()
    client = aioredis.Redis(host="127.0.0.1", port=private_redis.port, socket_timeout=1, socket_connect_timeout=1)
    politeness = Politeness(settings, limiter=build_limiter(settings, client))
    private_redis.stop()
    caplog.set_level(logging.INFO, logger="mediacache.fetching.host_limiter")
    await start_worker(politeness=politeness, concurrency=4)
    base = _n()
    ids = await cache.cache_images([origin.url(f"/media/{base + i}.jpg?size=2048") for i in range(5)])

    async def all_delayed() -> bool:
        return (await cache.queue_stats()).delayed >= 5
    await wait_until(all_delayed, timeout_s=20, what="jobs delayed while the limiter's Redis is down")
    assert not [p for _, p in list(origin.requests) if p.startswith(f"/media/{base}")]
    records = await cache.get_assets(ids)
    assert all(r.status is CacheStatus.PENDING and r.attempts == 0 for r in records.values())
    private_redis.start()
    await wait_until(lambda: _all_final(cache, ids), timeout_s=30, what="downloads after Redis is back")
    assert {r.status for r in (await cache.get_assets(ids)).values()} == {CacheStatus.CACHED}
    down = [r for r in caplog.records if "Redis did not answer" in r.getMessage()]
    assert len(down) == 1, [r.getMessage() for r in down]


def test_a_malformed_limit_rule_is_named_at_start_up() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(host_limits="*.tiktokcdn.com=20/s:8,cdn.example.com=fast")
    message = str(caught.value)
    assert "'cdn.example.com=fast'" in message and "pattern=RATE/s:CONCURRENCY" in message
    with pytest.raises(ConfigError, match="MEDIACACHE_HOST_BREAKER"):
        load_settings(host_breaker="five")


async def test_refresh_source_keeps_the_id_of_a_failed_expired_asset(
        cache: MediaCache, start_worker: WorkerFactory, origin: Origin) -> None:
    now = int(time.time())
    n = _n()
    stale = origin.url(f"/media/{n}.jpg?size=4096&x-expires={now - 30}&x-signature=old")
    post = await cache.save_tiktok_post(tiktok_id=f"t{n}", username="someone", video_url=stale)
    assert post.video_key is not None
    await start_worker(concurrency=2)
    await wait_until(lambda: _all_final(cache, [uuid.UUID(post.video_key)]), what="the expired video")
    failed = await cache.get_asset(post.video_key)
    assert failed is not None and failed.status is CacheStatus.FAILED and failed.error_kind == "expired"

    fresh = origin.url(f"/media/{n}.jpg?size=4096&x-expires={now + 3600}&x-signature=new")
    again = await cache.save_tiktok_post(tiktok_id=f"t{n}", username="someone", video_url=fresh)
    assert again.video_key == post.video_key
    await wait_until(lambda: _all_final(cache, [uuid.UUID(post.video_key)]), what="the refreshed video")
    cached = await cache.get_asset(post.video_key)
    assert cached is not None and cached.status is CacheStatus.CACHED and cached.original_url == fresh
    assert cached.attempts == 1
    shown = await cache.get_tiktok_post(again.id)
    assert shown is not None and shown.video_url == await cache.get_url(post.video_key)
    assert shown.video_url is not None and shown.video_url != fresh

    with pytest.raises(AssetStateError, match="already cached"):
        await cache.refresh_source(post.video_key, stale)
    with pytest.raises(RecordNotFoundError):
        await cache.refresh_source(uuid.uuid4(), fresh)
    with pytest.raises(InvalidURLError):
        await cache.refresh_source(post.video_key, "ftp://example.com/x.jpg")
    unchanged = await cache.get_asset(post.video_key)
    assert unchanged == cached


async def test_hosts_and_refresh_over_http_cli_and_metrics(api: Any, origin: Origin) -> None:
    n = _n()
    made = (await api.client.post("/api/assets", json={"url": origin.url(f"/media/{n}.jpg?size=2048")})).json()
    await api.wait_settled([made["id"]])
    stats = (await api.client.get("/api/stats")).json()
    hosts = {h["host"]: h for h in stats["hosts"]}
    assert hosts["127.0.0.1"]["breaker"] == "closed" and hosts["127.0.0.1"]["limits"] == "unlimited:64"
    metrics = (await api.client.get("/metrics")).text
    assert 'mediacache_host_breaker_open{host="127.0.0.1"} 0.0' in metrics
    assert 'mediacache_host_rate{host="127.0.0.1"}' in metrics and "mediacache_assets_at_risk" in metrics
    dashboard = (await api.client.get("/api/dashboard")).json()
    assert [h["host"] for h in dashboard["hosts"]] == ["127.0.0.1"]

    fresh = origin.url(f"/media/{n}.jpg?size=2048&v=2")
    refused = await api.client.put(f"/api/assets/{made['id']}/source", json={"url": fresh})
    assert refused.status_code == 409 and refused.json()["error"] == "conflict"
    assert (await api.client.put(f"/api/assets/{uuid.uuid4()}/source", json={"url": fresh})).status_code == 404
    assert (await api.client.put(f"/api/assets/{made['id']}/source", json={"url": "nope"})).status_code == 422
    assert (await api.client.get(f"/api/assets/{made['id']}")).json()["original_url"].endswith("size=2048")


async def test_cli_refresh_and_stats(cache: MediaCache, origin: Origin, start_worker: WorkerFactory) -> None:
    now = int(time.time())
    n = _n()
    asset_id = await cache.cache_image(origin.url(f"/media/{n}.jpg?size=2048&x-expires={now - 5}"))
    await start_worker(concurrency=1)
    await wait_until(lambda: _all_final(cache, [asset_id]), what="the expired asset")
    done = await acli(cache.settings, "refresh", str(asset_id), origin.url(f"/media/{n}.jpg?size=2048"))
    assert done.returncode == 0, done.stderr
    await wait_until(lambda: _cached(cache, asset_id), what="the refreshed asset")
    again = await acli(cache.settings, "refresh", str(asset_id), origin.url(f"/media/{n}.jpg"))
    assert again.returncode != 0 and "already cached" in again.stderr
    shown = await acli(cache.settings, "stats")
    assert "host 127.0.0.1: breaker closed" in shown.stdout and "at_risk 0" in shown.stdout


async def _cached(cache: MediaCache, asset_id: uuid.UUID) -> bool:
    record = await cache.get_asset(asset_id)
    return record is not None and record.status is CacheStatus.CACHED
