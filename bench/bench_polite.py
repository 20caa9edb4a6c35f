"""Throughput of N x SIZE downloads through one in-process worker, with the host limiter on or off.

    PYTHONPATH=src python -m bench.bench_polite [N] [SIZE] [CONCURRENCY]   (from the repository root)

Runs three rounds on a fresh SQLite file, local storage, Redis at 127.0.0.1:6379 under a private
prefix and the test origin on 127.0.0.1: no limiter (MEDIACACHE_HOST_LIMITING=false), the limiter
with `*=unlimited` (its cost: two Redis round trips per download), and the default rules
(*=50/s:32, which caps this single origin host at 50 downloads/s by design). Prints one line each.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis.asyncio as aioredis
from tests.support.origin import Origin

from mediacache.db.schema import upgrade
from mediacache.service import MediaCache
from mediacache.settings import load_settings
from mediacache.worker import CacheWorker


async def one_round(label: str, n: int, size: int, concurrency: int, origin: Origin, **overrides: object) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        prefix = f"bench-polite-{uuid.uuid4().hex[:8]}"
        settings = load_settings(database_url=f"sqlite+aiosqlite:///{tmp}/b.db", data_dir=Path(tmp),
                                 queue_prefix=prefix, signing_secret="bench", allowed_networks="127.0.0.0/8",
                                 storage="local", **overrides)
        await asyncio.to_thread(upgrade, settings)
        cache = MediaCache(settings)
        worker = CacheWorker(cache, concurrency=concurrency)
        await worker.start()
        try:
            started = time.perf_counter()
            ids = await cache.cache_images([origin.url(f"/media/{i}.jpg?size={size}&r={prefix}") for i in range(n)])
            while True:
                stats = await cache.cache_stats()
                if stats.cached + stats.failed >= n:
                    break
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
            assert stats.failed == 0, stats
            print(f"{label:<28} {n} x {size // 1024} KiB: {elapsed:6.2f} s, {n / elapsed:7.1f} downloads/s",
                  flush=True)
            assert len(ids) == n
        finally:
            await worker.stop(grace_s=5)
            await cache.close()
            client = aioredis.Redis()
            keys = [k async for k in client.scan_iter(f"{prefix}:*", count=1000)]
            if keys:
                await client.delete(*keys)
            await client.aclose()


async def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 50 * 1024
    concurrency = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    origin = Origin().start()
    try:
        await one_round("no limiter", n, size, concurrency, origin, host_limiting=False)
        await one_round("limiter, *=unlimited", n, size, concurrency, origin, host_limits="*=unlimited")
        await one_round("no limiter (again)", n, size, concurrency, origin, host_limiting=False)
        await one_round("limiter, *=unlimited (again)", n, size, concurrency, origin, host_limits="*=unlimited")
        await one_round("limiter, default *=50/s:32", n, size, concurrency, origin)
    finally:
        origin.stop()


if __name__ == "__main__":
    asyncio.run(main())
