#!/usr/bin/env python3
"""Latency of the producer side: cache_image, cache_images(100) and get_urls(1000).

    .venv/bin/python bench/bench_latency.py [--rounds 2000]

Against the benchmark PostgreSQL (127.0.0.1:55432, or DATABASE_URL) and Redis DB 5, with no
worker running. Prints one JSON line with p50/p99 in milliseconds and the number of SQL
statements one get_urls(1000) call issues.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_bench import bench_settings_env, reset


async def timed_get_urls(cache: Any, values: list[Any]) -> float:
    t0 = time.perf_counter()
    await cache.get_urls(values)
    return time.perf_counter() - t0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)


async def measure(rounds: int) -> dict[str, Any]:
    from sqlalchemy import event

    from mediacache import MediaCache

    async with MediaCache.from_env() as cache:
        await cache.cache_image("http://127.0.0.1:8790/media/0.jpg")  # connect, warm caches
        single: list[float] = []
        for i in range(rounds):
            t0 = time.perf_counter()
            await cache.cache_image(f"http://127.0.0.1:8790/media/{i}.jpg?size=51200")
            single.append(time.perf_counter() - t0)
        batch: list[float] = []
        ids = []
        for i in range(max(20, rounds // 100)):
            urls = [f"http://127.0.0.1:8790/media/{i}-{j}.jpg" for j in range(100)]
            t0 = time.perf_counter()
            ids += await cache.cache_images(urls)
            batch.append(time.perf_counter() - t0)
        values = ids[:1000]
        statements: list[str] = []

        def count(*args: Any) -> None:
            statements.append(args[2])

        for _ in range(5):  # the first calls prepare the statement on the server
            await cache.get_urls(values)
        resolve = [await timed_get_urls(cache, values) for _ in range(200)]
        # As mediacache's own long-running processes do after start-up (worker, server): full
        # garbage collections then stop walking the objects every import left behind.
        gc.collect()
        gc.freeze()
        resolve_frozen = [await timed_get_urls(cache, values) for _ in range(200)]
        gc.unfreeze()
        event.listen(cache.backends.engine.sync_engine, "before_cursor_execute", count)
        await cache.get_urls(values)
    return {
        "bench": "latency", "rounds": rounds,
        "cache_image_ms": {"p50": pct(single, 0.5), "p99": pct(single, 0.99),
                           "mean": round(statistics.mean(single) * 1000, 3)},
        "cache_images_100_ms": {"p50": pct(batch, 0.5), "p99": pct(batch, 0.99)},
        "get_urls_1000_ms": {"p50": pct(resolve, 0.5), "p99": pct(resolve, 0.99)},
        "get_urls_1000_ms_gc_frozen": {"p50": pct(resolve_frozen, 0.5), "p99": pct(resolve_frozen, 0.99)},
        "get_urls_1000_queries": len(statements),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mc-bench-lat-") as tmp:
        env = bench_settings_env(Path(tmp))
        env["MEDIACACHE_STORAGE"] = os.environ.get("MEDIACACHE_STORAGE", "local")
        asyncio.run(reset(env))
        os.environ.update(env)
        print(json.dumps(asyncio.run(measure(args.rounds))))


if __name__ == "__main__":
    main()
