#!/usr/bin/env python3
"""The cost of deduplication on the producer side, and the usage report at scale.

    PYTHONPATH=src .venv/bin/python bench/bench_dedup.py [--rounds 500] [--assets 100000]

Creates (and drops) a PostgreSQL database on 127.0.0.1:5432 and uses Redis at 127.0.0.1:6379
under a private prefix (deleted at the end); no worker runs. Prints one JSON line: cache_image
p50/p99 in ms with dedup off, on for new URLs and on for repeats (hits); cache_images(100) p50/p99
off and on; usage() seconds at --assets assets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from sqlalchemy import text

from mediacache.db.schema import upgrade
from mediacache.service import MediaCache
from mediacache.settings import load_settings

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)


async def timed(fn: Any, rounds: int) -> dict[str, float]:
    out = []
    for i in range(rounds):
        t0 = time.perf_counter()
        await fn(i)
        out.append(time.perf_counter() - t0)
    return {"p50_ms": pct(out, 0.5), "p99_ms": pct(out, 0.99), "mean_ms": round(statistics.mean(out) * 1000, 3)}


async def main(rounds: int, assets: int) -> dict[str, Any]:
    name = f"mediacache_bench_dedup_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    prefix = f"bench-dedup-{uuid.uuid4().hex[:6]}"
    url = ADMIN.rsplit("/", 1)[0] + f"/{name}"
    base = {"database_url": url, "queue_prefix": prefix, "redis_host": "127.0.0.1", "signing_secret": "bench"}
    result: dict[str, Any] = {"rounds": rounds}
    try:
        await asyncio.to_thread(upgrade, load_settings(**base))
        signed = "https://p16-sign.tiktokcdn.com/obj/{n}.jpeg?x-expires={e}&x-signature=s{e}"
        async with MediaCache(load_settings(**base, dedup="off")) as off, MediaCache(load_settings(**base)) as on:
            await off.cache_image(signed.format(n="warm-off", e=1))
            await on.cache_image(signed.format(n="warm-on", e=1))
            result["cache_image_off"] = await timed(
                lambda i: off.cache_image(signed.format(n=f"off{i}", e=1_800_000_000 + i)), rounds)
            result["cache_image_on_new"] = await timed(
                lambda i: on.cache_image(signed.format(n=f"on{i}", e=1_800_000_000 + i)), rounds)
            result["cache_image_on_hit"] = await timed(
                lambda i: on.cache_image(signed.format(n="hit", e=1_800_000_000 + i)), rounds)
            batch_rounds = max(rounds // 10, 10)
            result["cache_images_100_off"] = await timed(lambda i: off.cache_images(
                [signed.format(n=f"boff{i}-{j}", e=1_800_000_000) for j in range(100)]), batch_rounds)
            result["cache_images_100_on"] = await timed(lambda i: on.cache_images(
                [signed.format(n=f"bon{i}-{j}", e=1_800_000_000) for j in range(100)]), batch_rounds)
            # Half repeats of the batch before: the hit path for many keys.
            result["cache_images_100_on_half_repeats"] = await timed(lambda i: on.cache_images(
                [signed.format(n=f"bon{i}-{j}" if j % 2 else f"bnew{i}-{j}", e=1_800_000_001) for j in range(100)]),
                batch_rounds)

            # Fill to `assets` rows directly (the queue is not the point here), two thirds CACHED,
            # a tenth of those sharing objects.
            async with on.backends.engine.begin() as conn:
                await conn.execute(text(
                    "INSERT INTO cache_assets (id, original_url, source_key, status, cache_key, content_type, "
                    "size_bytes, sha256, attempts, requests, created_at, updated_at, last_requested_at) "
                    "SELECT gen_random_uuid(), 'https://h' || (g % 7) || '.example.com/' || g, "
                    "'https://h' || (g % 7) || '.example.com/' || g, "
                    "CASE WHEN g % 3 = 0 THEN 'FAILED' ELSE 'CACHED' END, "
                    "CASE WHEN g % 3 = 0 THEN NULL ELSE 'media/k/' || (CASE WHEN g % 10 = 1 THEN 1 ELSE g END) END, "
                    "CASE WHEN g % 2 = 0 THEN 'image/jpeg' ELSE 'video/mp4' END, 1000 + g % 5000, NULL, 1, "
                    "1 + g % 3, now() - (g % 60) * interval '1 day', now(), now() - (g % 60) * interval '1 day' "
                    "FROM generate_series(1, :n) AS g"), {"n": assets})
                await conn.execute(text("ANALYZE cache_assets"))
            t0 = time.perf_counter()
            report = await on.usage()
            result["usage_s"] = round(time.perf_counter() - t0, 3)
            result["usage_assets"] = report.assets
            t0 = time.perf_counter()
            await on.dedup_savings()
            result["dashboard_dedup_savings_s"] = round(time.perf_counter() - t0, 3)
    finally:
        client = aioredis.Redis(host="127.0.0.1", port=6379)
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--assets", type=int, default=100_000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.rounds, args.assets))))
