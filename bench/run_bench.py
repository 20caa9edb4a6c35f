#!/usr/bin/env python3
"""One timed end-to-end run of mediacache, printing the same JSON line as the Node implementation's harness.

    .venv/bin/python bench/run_bench.py N SIZE CONCURRENCY WORKERS [--url-query Q] [--set KEY=VALUE ...]

The same steps as the Node implementation's bench_node.sh: services up (bench/services.sh), an empty
`cache_assets` table and bucket, an empty Redis DB 5, WORKERS `mediacache worker` processes
ready, then the clock: `cache_images(urls)` for N distinct origin URLs, and a poll of the table
every 50 ms until every row is CACHED or FAILED. After the JSON line, VERIFY_SAMPLE (default 10)
stored objects are checked against the origin by sha256 (stderr; exit 1 on a mismatch).

`--url-query delay_ms=100` appends `&delay_ms=100` to every origin URL (the origin's fault and
latency switches: delay_ms, status); the JSON line then has a `url_query` key. `--set KEY=VALUE`
(repeatable) sets a mediacache setting for the workers, e.g. `--set MEDIACACHE_HOST_LIMITS=*=unlimited`;
the JSON line then has a `settings` key.

Environment: DATABASE_URL (default the bench PostgreSQL on 127.0.0.1:55432), S3_ENDPOINT_URL and
the R2_* keys (default the bench SeaweedFS; MEDIACACHE_STORAGE=local to use a local directory),
BENCH_TIMEOUT_S (900), VERIFY_SAMPLE (10), BENCH_CPU_SPLIT=file (CPU seconds per component, on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # tests.support.s3server: bucket calls

from common import HERE, bench_env, cpu_seconds, peak_rss_mib, start_workers, stop_workers
from origin import expected_sha256

BIG = 1024 * 1024
BENCH_DB = "postgresql://postgres@127.0.0.1:55432/mediacache_bench"


def origin_urls(n: int, size: int, url_query: str = "") -> list[str]:
    """The benchmark's distinct origin URLs (the streaming /big route from 1 MiB), as the Node harness builds them."""
    origin = f"http://127.0.0.1:{os.environ.get('ORIGIN_PORT', '8790')}"
    extra = f"&{url_query}" if url_query else ""
    return [f"{origin}/big/{i}.mp4?size={size}{extra}" if size >= BIG else f"{origin}/media/{i}.jpg?size={size}{extra}"
            for i in range(n)]


def parse_settings(pairs: list[str]) -> dict[str, str]:
    """KEY=VALUE strings (the value may contain '=') as a dict; only mediacache's own settings."""
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.startswith("MEDIACACHE_"):
            raise SystemExit(f"--set {pair!r}: expected MEDIACACHE_NAME=VALUE")
        settings[key] = value
    return settings


def bench_settings_env(data_dir: Path, settings: dict[str, str] | None = None) -> dict[str, str]:
    """bench_env on the harness's services: Redis DB 5, the bench PostgreSQL, SeaweedFS unless told otherwise.

    Derivatives are off unless `settings` turn them on: the Node design makes none, and with the
    media extra installed they are on by default (the worker then also loads libvips and FFmpeg).
    """
    env = bench_env(data_dir, REDIS_HOST="127.0.0.1", REDIS_PORT="6379", REDIS_DB="5",
                    DATABASE_URL=os.environ.get("DATABASE_URL", BENCH_DB),
                    MEDIACACHE_STORAGE=os.environ.get("MEDIACACHE_STORAGE", "s3"),
                    **{"MEDIACACHE_RECONCILE_INTERVAL_S": "0", "MEDIACACHE_DERIVE": "off", **(settings or {})})
    if env["MEDIACACHE_STORAGE"] == "s3":
        env.setdefault("S3_ENDPOINT_URL", "http://127.0.0.1:8333")
        env.setdefault("R2_ACCESS_KEY_ID", "anchoraccess")
        env.setdefault("R2_SECRET_ACCESS_KEY", "anchorsecret")
        env.setdefault("R2_BUCKET_NAME", "mediacache-bench")
        env.setdefault("S3_REGION", "us-east-1")
    return env


async def reset(env: dict[str, str], *, flush_redis: bool = True) -> None:
    """Empty table (database created and migrated when missing), empty bucket, empty Redis DB 5
    (as the Node harness does; mediacache's keys have a private prefix anyway)."""
    import asyncpg
    import redis.asyncio as aioredis

    url = env["DATABASE_URL"]
    if url.startswith("postgres"):
        name = url.rsplit("/", 1)[1]
        admin = await asyncpg.connect(url.rsplit("/", 1)[0] + "/postgres")
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
    await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "mediacache", "db", "upgrade"], env=env,
                            check=True, capture_output=True)
    if url.startswith("postgres"):
        conn = await asyncpg.connect(url)
        # The counters are kept by triggers that TRUNCATE does not fire, so they go too; CASCADE takes
        # the tables that refer to assets (derivatives, application tables).
        await conn.execute("TRUNCATE cache_assets, cache_asset_counts CASCADE")
        await conn.close()
    if flush_redis:
        client = aioredis.Redis(host="127.0.0.1", port=6379, db=5)
        await client.flushdb()
        await client.aclose()
    if env["MEDIACACHE_STORAGE"] == "s3":
        from tests.support.s3server import S3Server, create_bucket, delete_bucket

        server = S3Server(env["S3_ENDPOINT_URL"], env["R2_ACCESS_KEY_ID"], env["R2_SECRET_ACCESS_KEY"],
                          env.get("S3_REGION", "us-east-1"))
        await asyncio.to_thread(delete_bucket, server, env["R2_BUCKET_NAME"])
        await asyncio.to_thread(create_bucket, server, env["R2_BUCKET_NAME"])


async def wait_settled(cache: Any, n: int, t0: float, timeout_s: float) -> Any:
    """Polls the cache's statistics every 50 ms until `n` assets are CACHED or FAILED, or
    `timeout_s` after `t0` (perf_counter); returns the last statistics."""
    while True:
        stats = await cache.cache_stats()
        if stats.cached + stats.failed >= n or time.perf_counter() - t0 > timeout_s:
            return stats
        await asyncio.sleep(0.05)


async def timed(env: dict[str, str], urls: list[str], pids: list[int], timeout_s: float) -> dict[str, float]:
    os.environ.update(env)
    from mediacache import MediaCache

    async with MediaCache.from_env() as cache:
        await cache.backends.queue.ping()  # connect before the clock starts
        await cache.cache_stats()
        cpu0 = sum(cpu_seconds(p) for p in pids)
        split_file = os.environ.get("BENCH_CPU_SPLIT")
        if split_file:
            subprocess.run([sys.executable, str(HERE / "cpu_split.py"), "snap", split_file], check=True)
        t0 = time.perf_counter()
        await cache.cache_images(urls)
        enqueue_s = time.perf_counter() - t0
        stats = await wait_settled(cache, len(urls), t0, timeout_s)
        total_s = time.perf_counter() - t0
        cpu_s = sum(cpu_seconds(p) for p in pids) - cpu0
        if split_file:
            split = subprocess.run([sys.executable, str(HERE / "cpu_split.py"), "diff", split_file],
                                   check=True, capture_output=True, text=True)
            print(split.stdout, file=sys.stderr, end="")
    return {"enqueue_s": enqueue_s, "total_s": total_s, "cached": stats.cached, "cpu_s": cpu_s}


async def verify(env: dict[str, str], sample: int) -> tuple[int, int]:
    import httpx

    from mediacache import MediaCache
    from mediacache.domain import CacheStatus

    ok = checked = 0
    async with MediaCache.from_env() as cache:
        rows = await cache.backends.assets.upkeep.cached_page(None, 100_000)
        for asset_id, key in random.sample(rows, min(sample, len(rows))):
            rec = await cache.get_asset(asset_id)
            assert rec is not None and rec.status is CacheStatus.CACHED
            digest = hashlib.sha256()
            async for chunk in cache.backends.store.open_stream(key):
                digest.update(chunk)
            path = httpx.URL(rec.original_url).path
            kind, n = path.split("/")[1], int(path.split("/")[2].split(".")[0])
            size = int(httpx.URL(rec.original_url).params["size"])
            checked += 1
            ok += digest.hexdigest() == rec.sha256 == expected_sha256(kind, n, size) and rec.size_bytes == size
    return ok, checked


def start_services() -> None:
    weed = os.environ.get("WEED_BIN", str(Path(sys.executable).parent / "weed"))
    subprocess.run(["bash", str(HERE / "services.sh"), "start"], check=True, env={**os.environ, "WEED_BIN": weed})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("n", "size", "concurrency", "workers"):
        parser.add_argument(name, type=int)
    parser.add_argument("--url-query", default="", help="appended to every origin URL, e.g. delay_ms=100")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a mediacache setting for the workers (repeatable)")
    args = parser.parse_args()
    n, size, concurrency, workers = args.n, args.size, args.concurrency, args.workers
    settings = parse_settings(args.settings)
    start_services()
    urls = origin_urls(n, size, args.url_query)
    with tempfile.TemporaryDirectory(prefix="mc-bench-") as tmp:
        env = bench_settings_env(Path(tmp), settings)
        asyncio.run(reset(env))
        procs = start_workers(env, workers, concurrency, Path(tmp) / "logs")
        try:
            pids = [p.pid for p in procs]
            r = asyncio.run(timed(env, urls, pids, float(os.environ.get("BENCH_TIMEOUT_S", 900))))
            peak = max(peak_rss_mib(p) for p in pids)
        finally:
            stop_workers(procs)
        print(json.dumps({
            "impl": "mediacache", "n": n, "size": size, "concurrency": concurrency, "workers": workers,
            "enqueue_s": round(r["enqueue_s"], 3), "total_s": round(r["total_s"], 3),
            "assets_per_s": round(r["cached"] / r["total_s"], 2), "failed": n - int(r["cached"]),
            "peak_rss_mb_per_worker": round(peak, 1), "worker_cpu_s": round(r["cpu_s"], 2),
            **({"url_query": args.url_query} if args.url_query else {}),
            **({"settings": settings} if settings else {}),
        }), flush=True)
        sample = int(os.environ.get("VERIFY_SAMPLE", 10))
        if sample > 0:
            ok, checked = asyncio.run(verify(env, sample))
            print(f"verify: {ok}/{checked} sampled objects match the origin (sha256, size)", file=sys.stderr)
            if ok != checked or checked == 0:
                raise SystemExit(1)


if __name__ == "__main__":
    main()
