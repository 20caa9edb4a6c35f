"""A million assets in PostgreSQL: how long statistics, the dashboard, resolution and maintenance take.

    .venv/bin/python bench/scale.py [--rows 1000000] [--keep] [--reuse NAME] [--reads-only]

Creates its own database (`mediacache_scale_<pid>`) on the PostgreSQL of MEDIACACHE_TEST_PG
(default postgresql://postgres@127.0.0.1:5432/postgres) and a private BullMQ prefix on
127.0.0.1:6379, fills the table with `--rows` assets in one INSERT ... SELECT (half of them older
than 30 days and settled, the rest mixed: 60% CACHED, 20% FAILED, 15% PENDING, 5% DOWNLOADING),
then times each operation the production-scale issue names, prints a line per figure and one JSON
line at the end, and drops the database and the Redis keys (unless --keep). `--reuse` measures a
database an earlier `--keep` run left (its name is printed) without generating it again, and
`--reads-only` stops after the read paths, leaving the table as it was, so a change to them can be
measured again and again on the same million rows.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import signal
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from mediacache.api import create_app
from mediacache.api.routes_dashboard import dashboard_data
from mediacache.api.server import bind, serving
from mediacache.db.schema import upgrade
from mediacache.service import MediaCache
from mediacache.settings import load_settings

ADMIN_DSN = os.environ.get("MEDIACACHE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

# Row i: even rows are 31-90 days old and settled (CACHED, or FAILED for one in five), odd rows
# are 0-29 days old with mixed statuses. 500,000 rows of a million are what cleanup(days=30) removes.
GENERATE = """
INSERT INTO cache_assets (id, original_url, status, cache_key, content_type, size_bytes, sha256, attempts,
                          error, error_kind, created_at, updated_at, cached_at, last_requested_at)
SELECT md5(i::text || $2)::uuid,
       'https://p16-sign.tiktokcdn.com/obj/' || i || '.jpeg?x-expires=1700000000&x-signature=abc',
       s.status,
       CASE WHEN s.status = 'CACHED' THEN 'media/' || md5(i::text || $2)::uuid || '/' || md5(i::text) || '.jpg' END,
       CASE WHEN s.status = 'CACHED' THEN 'image/jpeg' END,
       CASE WHEN s.status = 'CACHED' THEN 20000 + (i % 100000) END,
       CASE WHEN s.status = 'CACHED' THEN md5(i::text) || md5(i::text) END,
       CASE WHEN s.status IN ('CACHED', 'PENDING') THEN 1 ELSE 3 END,
       CASE WHEN s.status = 'FAILED' THEN 'https://example.com answered 404' END,
       CASE WHEN s.status = 'FAILED' THEN (ARRAY['not_found', 'transient', 'forbidden', 'expired'])[1 + i % 4] END,
       s.created_at, s.created_at + interval '1 minute',
       CASE WHEN s.status = 'CACHED' THEN s.created_at + interval '1 minute' END,
       s.created_at
FROM generate_series(1, $1) AS i,
LATERAL (SELECT
    CASE WHEN i % 2 = 0 THEN (CASE WHEN i % 10 = 0 THEN 'FAILED' ELSE 'CACHED' END)
         WHEN i % 20 < 12 THEN 'CACHED' WHEN i % 20 < 16 THEN 'FAILED' WHEN i % 20 < 19 THEN 'PENDING'
         ELSE 'DOWNLOADING' END AS status,
    CASE WHEN i % 2 = 0 THEN now() - interval '31 days' - (i % 59) * interval '1 day'
         ELSE now() - (i % 29) * interval '1 day' - (i % 86400) * interval '1 second' END AS created_at
) AS s
"""


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int, warm_up: int = 3) -> tuple[float, float, Any]:
    """p50 and p99 in ms of `repeat` calls after `warm_up` untimed ones (a new connection's first
    statements also look up types and prepare), and the last result."""
    for _ in range(warm_up):
        await fn()
    times: list[float] = []
    result: Any = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = await fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))], result


async def count_due(dsn: str) -> int:
    """Settled assets last requested more than 30 days ago: what cleanup(days=30) removes."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM cache_assets WHERE status IN ('CACHED', 'FAILED') "
            "AND last_requested_at < now() - interval '30 days'"))
    finally:
        await conn.close()


async def run_cleanup(env: dict[str, str], busy_share: str, *, interrupt_after_s: float | None) -> float:
    """`mediacache cleanup --days 30 --include-referenced` in its own process; with
    `interrupt_after_s`, a SIGINT (Ctrl-C) that long after it starts. Returns its running time."""
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mediacache", "cleanup", "--days", "30", "--include-referenced",
        "--busy-share", busy_share, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), interrupt_after_s)
    except TimeoutError:
        proc.send_signal(signal.SIGINT)
        out, err = await proc.communicate()
    if interrupt_after_s is None and proc.returncode != 0:
        raise RuntimeError(f"mediacache cleanup exited {proc.returncode}: {err.decode()[-2000:]}")
    said = out.decode().strip() or err.decode().strip()[-300:] or "(interrupted before its summary)"
    print(f"  mediacache cleanup exited {proc.returncode}: {said}",
          flush=True)
    return time.perf_counter() - start


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--reuse", metavar="NAME", help="measure this kept database instead of generating one")
    parser.add_argument("--interrupt-after-s", type=float, default=30.0,
                        help="interrupt the first cleanup run after this long, then run it again")
    parser.add_argument("--gap-ms", type=float, default=0.0,
                        help="pause between the cache_image calls timed during cleanup (0: back to back)")
    parser.add_argument("--busy-share", default="1", help="mediacache cleanup --busy-share")
    parser.add_argument("--reads-only", action="store_true",
                        help="only statistics, dashboard, get_urls and /api/stats (nothing changes)")
    args = parser.parse_args()
    name = args.reuse or f"mediacache_scale_{os.getpid()}"
    keep = args.keep or bool(args.reuse)
    prefix = f"mcbench-scale-{uuid.uuid4().hex[:8]}"
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    figures: dict[str, Any] = {"rows": args.rows}

    def report(key: str, value: Any, text: str) -> None:
        figures[key] = value
        print(text, flush=True)

    if not args.reuse:
        await admin(f'CREATE DATABASE "{name}"')
    print(f"database {name}", flush=True)
    tmp = TemporaryDirectory(prefix="mediacache-scale-")
    try:
        settings = load_settings(database_url=dsn, data_dir=Path(tmp.name), queue_prefix=prefix,
                                 redis_host="127.0.0.1", redis_port=6379, signing_secret="bench")
        await asyncio.to_thread(upgrade, settings)
        conn = await asyncpg.connect(dsn)
        try:
            if not args.reuse:
                start = time.perf_counter()
                await conn.execute(GENERATE, args.rows, uuid.uuid4().hex)
                await conn.execute("ANALYZE cache_assets")
                report("generate_s", round(time.perf_counter() - start, 1),
                       f"generated {args.rows} assets in {time.perf_counter() - start:.1f} s (triggers on)")
            figures["rows"] = await conn.fetchval("SELECT count(*) FROM cache_assets")
            sizes = await conn.fetchrow(
                "SELECT pg_relation_size('cache_assets') AS heap, pg_indexes_size('cache_assets') AS idx")
            report("table_mib", round(sizes["heap"] / 2**20), f"table {sizes['heap'] / 2**20:.0f} MiB, "
                   f"indexes {sizes['idx'] / 2**20:.0f} MiB")
            figures["indexes_mib"] = round(sizes["idx"] / 2**20)
            sample = [r["id"] for r in await conn.fetch(
                "SELECT id FROM cache_assets ORDER BY random() LIMIT 1000")]
        finally:
            await conn.close()

        async with MediaCache(settings) as cache:
            # As the worker and the HTTP service do once started: what lives as long as the process
            # is left out of full garbage collections, which would otherwise show in every p99.
            gc.freeze()
            p50, p99, stats = await timed(cache.cache_stats, 200)
            report("cache_stats_p99_ms", round(p99, 2), f"cache_stats(): p50 {p50:.2f} ms, p99 {p99:.2f} ms "
                   f"(total {stats.total}, failed {stats.failed}) target < 50 ms")
            p50, p99, _ = await timed(lambda: dashboard_data(cache, details=True), 100)
            report("dashboard_p99_ms", round(p99, 1), f"dashboard data: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
                   "target < 300 ms")
            p50, p99, _ = await timed(lambda: cache.get_urls(sample), 200)
            report("get_urls_1000_p99_ms", round(p99, 2), f"get_urls({len(sample)}): p50 {p50:.2f} ms, "
                   f"p99 {p99:.2f} ms target < 20 ms")

            # The generated rows point at objects nobody stored; the service's start-up check that local
            # storage holds the database's newest objects would rightly refuse it, so store those few.
            async def generated() -> AsyncIterator[bytes]:
                yield b"generated"
            for key in await cache.backends.assets.newest_cached_keys(20):
                await cache.backends.store.put_stream(key, generated())
            sock = bind("127.0.0.1", 0)
            async with serving(create_app(settings, run_worker=False), sock) as running, \
                    httpx.AsyncClient(base_url=running.url) as client:
                async def api_stats() -> None:
                    (await client.get("/api/stats")).raise_for_status()
                p50, p99, _ = await timed(api_stats, 200)
                report("api_stats_p99_ms", round(p99, 2), f"GET /api/stats: p50 {p50:.2f} ms, p99 {p99:.2f} ms "
                       "target < 50 ms")
            if args.reads_only:
                print(json.dumps(figures))
                return

            async def enqueue_until(stop: asyncio.Event, path: str) -> list[float]:
                """cache_image latencies in ms, called back to back (with --gap-ms between) until `stop`."""
                latencies: list[float] = []
                while not stop.is_set():
                    t0 = time.perf_counter()
                    await cache.cache_image(f"https://example.com/{path}/{len(latencies)}.jpg")
                    latencies.append((time.perf_counter() - t0) * 1000)
                    await asyncio.sleep(args.gap_ms / 1000)
                return sorted(latencies)

            def p99_of(latencies: list[float]) -> float:
                return latencies[int(len(latencies) * 0.99)] if latencies else 0.0

            # The same calls with nothing else running first: what cleanup's figure compares with.
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(10, stop.set)
            idle = await enqueue_until(stop, "before-cleanup")
            report("cache_image_idle_p99_ms", round(p99_of(idle), 2),
                   f"cache_image with nothing else running: p50 {statistics.median(idle):.2f} ms "
                   f"p99 {p99_of(idle):.2f} ms ({len(idle)} calls)")

            # As in production: `mediacache cleanup` in a process of its own, the application's
            # cache_image calls in this one. The first run is interrupted (Ctrl-C) part-way, the
            # second finishes what it left.
            env = {**os.environ, "DATABASE_URL": dsn, "MEDIACACHE_DATA_DIR": tmp.name,
                   "MEDIACACHE_QUEUE_PREFIX": prefix, "REDIS_HOST": "127.0.0.1", "REDIS_PORT": "6379",
                   "MEDIACACHE_SIGNING_SECRET": "bench"}
            due_before = await count_due(dsn)
            stop = asyncio.Event()
            producer = asyncio.create_task(enqueue_until(stop, "during-cleanup"))
            start = time.perf_counter()
            first_s = await run_cleanup(env, args.busy_share, interrupt_after_s=args.interrupt_after_s)
            due_between = await count_due(dsn)
            second_s = await run_cleanup(env, args.busy_share, interrupt_after_s=None)
            stop.set()
            latencies = await producer
            due_after = await count_due(dsn)
            p99 = p99_of(latencies)
            report("cleanup_s", round(time.perf_counter() - start, 1),
                   f"mediacache cleanup --days 30: {due_before} due; interrupted after {first_s:.1f} s with "
                   f"{due_between} left, run again: {second_s:.1f} s, {due_after} left; cache_image meanwhile "
                   f"p50 {statistics.median(latencies):.2f} ms p99 {p99:.2f} ms ({len(latencies)} calls) "
                   "target p99 < 10 ms")
            figures["cleanup_removed"] = due_before - due_after
            figures["cache_image_during_cleanup_p99_ms"] = round(p99, 2)

            # After cleanup, which took the old FAILED rows: the 100,000 recent ones are left.
            start = time.perf_counter()
            retried = await cache.retry_failed()
            report("retry_failed_s", round(time.perf_counter() - start, 1),
                   f"retry_failed(): {retried} assets in {time.perf_counter() - start:.1f} s (batches of 1000)")

            start = time.perf_counter()
            before = rss_mib()
            rec = await cache.reconcile(min_age_s=0)
            report("reconcile_s", round(time.perf_counter() - start, 1),
                   f"reconcile(): requeued {rec.requeued} in {time.perf_counter() - start:.1f} s, peak RSS "
                   f"{rss_mib():.0f} MiB (was {before:.0f})")
            start = time.perf_counter()
            garbage = await cache.collect_garbage(dry_run=True)
            report("gc_s", round(time.perf_counter() - start, 1),
                   f"gc --dry-run: {len(garbage.orphan_objects)} orphans, {len(garbage.dangling_rows)} rows "
                   f"without object in {time.perf_counter() - start:.1f} s, peak RSS {rss_mib():.0f} MiB")
            figures["peak_rss_mib"] = round(rss_mib())
    finally:
        redis_client = aioredis.Redis(host="127.0.0.1", port=6379)
        keys = [k async for k in redis_client.scan_iter(match=f"{prefix}:*", count=1000)]
        for start in range(0, len(keys), 1000):
            await redis_client.delete(*keys[start:start + 1000])
        await redis_client.aclose()
        if not keep:
            await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        tmp.cleanup()
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
