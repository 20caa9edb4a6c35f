#!/usr/bin/env python3
"""What derivatives cost the cache worker, and how both queues share the cores.

    PYTHONPATH=src .venv/bin/python bench/bench_derive_overhead.py [--assets 500] [--rounds 3] [--covers 60]

Part 1: `--assets` small JPEGs (50 KB, from an origin on 127.0.0.1) through an in-process
CacheWorker (concurrency 16, SQLite, local storage, Redis under a private prefix) with
MEDIACACHE_DERIVE=off and =on, alternating, `--rounds` times each. No derive worker runs, so the
figure is what the cache worker itself pays for derivatives: queueing one media-derive job per
asset. CPU is this process's (time.process_time) from the first job to the last CACHED.

Part 2: `--covers` 1080x1920 JPEG covers: the cache queue alone, the derive queue alone (one
sandbox child), then both at once in one process, as `mediacache worker` runs them; assets/s each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.support.origin import Origin  # noqa: E402

from mediacache.db.schema import upgrade_async  # noqa: E402
from mediacache.domain import CacheStatus  # noqa: E402
from mediacache.service import MediaCache  # noqa: E402
from mediacache.settings import load_settings  # noqa: E402
from mediacache.worker import CacheWorker  # noqa: E402


async def settings_for(data_dir: Path, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{data_dir / 'mc.db'}", "data_dir": data_dir,
        "queue_prefix": f"bench-{uuid.uuid4().hex[:8]}", "signing_secret": "bench",
        "allowed_networks": "127.0.0.0/8", "reconcile_interval_s": 0, "redis_host": "127.0.0.1",
    }
    values.update(overrides)
    settings = load_settings(**values)
    await upgrade_async(settings)
    return settings


async def drop_prefix(settings: Any) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis(**settings.redis_connection())
    keys = [k async for k in client.scan_iter(match=f"{settings.queue_prefix}:*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def wait_cached(cache: MediaCache, n: int) -> None:
    while True:
        if (await cache.cache_stats()).cached >= n:
            return
        await asyncio.sleep(0.05)


async def cache_round(origin: Origin, assets: int, derive: str) -> dict[str, float]:
    data_dir = Path(tempfile.mkdtemp(prefix="mc-bench-"))
    settings = await settings_for(data_dir, derive=derive)
    try:
        async with MediaCache(settings) as cache:
            urls = [origin.url(f"/media/{i}.jpg?size=51200") for i in range(assets)]
            await cache.cache_images(urls)
            worker = CacheWorker(cache, concurrency=16)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await worker.start()
            await wait_cached(cache, assets)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            derive_jobs = (await cache.backends.queue.derive.counts())["waiting"]
            await worker.stop(grace_s=5)
        return {"cpu_ms_per_asset": cpu * 1000 / assets, "assets_per_s": assets / wall, "derive_jobs": derive_jobs}
    finally:
        await drop_prefix(settings)
        shutil.rmtree(data_dir, ignore_errors=True)


async def shared_cores(origin: Origin, covers: int) -> dict[str, float]:
    import pyvips

    from mediacache.media.worker import DeriveWorker

    cover = pyvips.Image.gaussnoise(1080, 1920, sigma=40).cast("uchar").bandjoin([
        pyvips.Image.xyz(1080, 1920)[0].cast("uchar"), pyvips.Image.xyz(1080, 1920)[1].cast("uchar")])
    data = cover.copy(interpretation="srgb").jpegsave_buffer(Q=85)
    urls = [origin.serve_file(f"cover-{i}.jpg", data, "image/jpeg") for i in range(covers * 2)]
    out: dict[str, float] = {"cover_kb": len(data) / 1024}
    data_dir = Path(tempfile.mkdtemp(prefix="mc-bench-"))
    settings = await settings_for(data_dir)
    try:
        async with MediaCache(settings) as cache:
            deriver = DeriveWorker(cache)
            await deriver.start()
            await deriver.stop()  # started once so the timings below do not include the child's start-up
            # 1. cache alone (derive jobs pile up), 2. derive alone on those, 3. both on a new batch.
            await cache.cache_images(urls[:covers])
            worker = CacheWorker(cache, concurrency=16)
            t0 = time.perf_counter()
            await worker.start()
            await wait_cached(cache, covers)
            out["cache_alone_per_s"] = covers / (time.perf_counter() - t0)
            deriver = DeriveWorker(cache)
            await deriver.start()
            t0 = time.perf_counter()
            await wait_derived(cache, covers)
            out["derive_alone_per_s"] = covers / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            await cache.cache_images(urls[covers:])
            await wait_cached(cache, 2 * covers)
            out["cache_shared_per_s"] = covers / (time.perf_counter() - t0)
            await wait_derived(cache, 2 * covers)
            out["derive_shared_per_s"] = covers / (time.perf_counter() - t0)
            await deriver.stop()
            await worker.stop(grace_s=5)
    finally:
        await drop_prefix(settings)
        shutil.rmtree(data_dir, ignore_errors=True)
    return out


async def wait_derived(cache: MediaCache, n: int) -> None:
    from sqlalchemy import func, select

    from mediacache.db.models import CacheAsset

    while True:
        async with cache.backends.engine.connect() as conn:
            done = (await conn.execute(select(func.count()).where(
                CacheAsset.status == CacheStatus.CACHED.value, CacheAsset.media_state == "ok"))).scalar() or 0
        if done >= n:
            return
        await asyncio.sleep(0.1)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--assets", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--covers", type=int, default=60)
    args = parser.parse_args()
    origin = Origin().start()
    try:
        await cache_round(origin, 100, "off")  # warm-up: imports, first connections
        results: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
        for _ in range(args.rounds):
            for mode in ("off", "on"):
                r = await cache_round(origin, args.assets, mode)
                results[mode].append(r)
                print(f"derive={mode}: {r['cpu_ms_per_asset']:.2f} ms CPU/asset, {r['assets_per_s']:.0f} assets/s, "
                      f"{r['derive_jobs']:.0f} derive jobs queued", flush=True)
        med = {m: statistics.median(r["cpu_ms_per_asset"] for r in rs) for m, rs in results.items()}
        overhead = (med["on"] / med["off"] - 1) * 100
        print(f"median CPU per asset: off {med['off']:.2f} ms, on {med['on']:.2f} ms ({overhead:+.1f}%)")
        shared = await shared_cores(origin, args.covers) if args.covers else {}
        if shared:
            print("covers 1080x1920 ({cover_kb:.0f} KB): cache alone {cache_alone_per_s:.1f}/s, derive alone "
                  "{derive_alone_per_s:.1f}/s; sharing the cores: cache {cache_shared_per_s:.1f}/s, derive "
                  "{derive_shared_per_s:.1f}/s".format(**shared))
        print(json.dumps({"cpu_ms_per_asset": med, "overhead_pct": overhead, "shared": shared}))
    finally:
        origin.stop()


if __name__ == "__main__":
    asyncio.run(main())
