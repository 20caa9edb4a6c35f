#!/usr/bin/env python3
"""Chaos run: cache many assets with several workers while killing a random worker every few seconds.

    .venv/bin/python bench/chaos.py [--assets 1000] [--workers 3] [--kill-every-s 3]

Each kill is a SIGKILL (no clean shutdown); the killed worker is started again at once. When every
asset has settled (or the deadline passes) it prints one JSON line: how many assets ended CACHED,
FAILED, stuck (PENDING/DOWNLOADING) and duplicated (more than one stored object), the orphan
objects that garbage collection found, and how many stored files do not match the origin's sha256.
DATABASE_URL (or --database-url) may point at PostgreSQL; by default a throwaway SQLite file is
used. Through PgBouncer in transaction mode add --db-pgbouncer (MEDIACACHE_DB_PGBOUNCER=true).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import bench_env, drop_queue_keys, origin, start_workers, stop_workers
from origin import expected_sha256


def urls_for(base: str, n: int) -> list[str]:
    # Mostly images, and every tenth a 4 MiB video that takes long enough to be killed mid-download.
    return [f"{base}/big/{i}.mp4?size={4 * 1024 * 1024}" if i % 10 == 0 else f"{base}/media/{i}.jpg?size=51200"
            for i in range(n)]


async def run(args: argparse.Namespace, env: dict[str, str], base: str, log_dir: Path) -> dict[str, object]:
    os.environ.update(env)
    from mediacache import MediaCache
    from mediacache.domain import CacheStatus

    urls = urls_for(base, args.assets)
    workers = start_workers(env, args.workers, args.concurrency, log_dir)
    kills = 0
    async with MediaCache.from_env() as cache:
        ids = await cache.cache_images(urls)
        t0 = time.monotonic()
        next_kill = t0 + args.kill_every_s
        try:
            while time.monotonic() - t0 < args.deadline_s:
                stats = await cache.cache_stats()
                if stats.cached + stats.failed >= args.assets:
                    break
                if time.monotonic() >= next_kill:
                    victim = random.randrange(len(workers))
                    workers[victim].kill()
                    workers[victim].wait()
                    kills += 1
                    workers[victim] = start_workers(env, 1, args.concurrency, log_dir / f"restart-{kills}")[0]
                    next_kill = time.monotonic() + args.kill_every_s
                await asyncio.sleep(0.2)
            elapsed_s = time.monotonic() - t0
        finally:
            stop_workers(workers)

        stats = await cache.cache_stats()
        objects_root = cache.settings.objects_dir / "media"
        duplicated = sum(1 for i in ids if len(list((objects_root / str(i)).glob("*"))) > 1)
        gc_report = await cache.collect_garbage(dry_run=True)
        mismatched = 0
        for index, asset_id in enumerate(ids):
            rec = await cache.get_asset(asset_id)
            if rec is None or rec.status is not CacheStatus.CACHED or rec.cache_key is None:
                continue
            kind = "big" if index % 10 == 0 else "media"
            size = 4 * 1024 * 1024 if kind == "big" else 51200
            stored = hashlib.sha256((cache.settings.objects_dir / rec.cache_key).read_bytes()).hexdigest()
            if stored != rec.sha256 or stored != expected_sha256(kind, index, size):
                mismatched += 1
    return {"bench": "chaos", "assets": args.assets, "workers": args.workers, "kills": kills,
            "seconds": round(elapsed_s, 1), "cached": stats.cached, "failed": stats.failed,
            "stuck": stats.pending + stats.downloading, "duplicated": duplicated,
            "orphan_objects": len(gc_report.orphan_objects), "sha256_mismatches": mismatched}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--kill-every-s", type=float, default=3.0)
    parser.add_argument("--deadline-s", type=float, default=600.0)
    parser.add_argument("--database-url", help="DATABASE_URL of the run (default: the environment's, else SQLite)")
    parser.add_argument("--db-pgbouncer", action="store_true",
                        help="the database is behind PgBouncer in transaction mode (MEDIACACHE_DB_PGBOUNCER)")
    args = parser.parse_args()
    database: dict[str, str] = {}
    if args.database_url:
        database["DATABASE_URL"] = args.database_url
    if args.db_pgbouncer:
        database["MEDIACACHE_DB_PGBOUNCER"] = "true"
    with tempfile.TemporaryDirectory(prefix="mc-chaos-") as tmp, origin() as base:
        data_dir = Path(tmp)
        # Short locks and leases, so killed work is taken over within seconds.
        env = bench_env(data_dir, MEDIACACHE_LOCK_DURATION_MS="2000", MEDIACACHE_LEASE_S="3",
                        MEDIACACHE_RECONCILE_INTERVAL_S="5", **database)
        subprocess.run([sys.executable, "-m", "mediacache", "db", "upgrade"], env=env, check=True, capture_output=True)
        try:
            print(json.dumps(asyncio.run(run(args, env, base, data_dir))))
        finally:
            drop_queue_keys(env)


if __name__ == "__main__":
    main()
