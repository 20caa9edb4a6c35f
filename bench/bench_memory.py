#!/usr/bin/env python3
"""Peak memory of a worker process while it caches one large file: it must stay flat whatever the size.

    .venv/bin/python bench/bench_memory.py [--size-mb 200] [--storage local|s3]

Starts the benchmark origin, migrates a throwaway SQLite database, runs one `mediacache worker`
process, caches /big/1.mp4 of the given size and prints one JSON line: the worker's RSS before
the job and its peak (VmHWM) after, the throughput, and whether the stored sha256 matches.
For S3, set the S3 variables (S3_ENDPOINT_URL, R2_ACCESS_KEY_ID, ...) in the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import bench_env, drop_queue_keys, origin, peak_rss_mib, rss_mib, start_workers, stop_workers
from origin import expected_sha256


async def wait_cached(env: dict[str, str], url: str, timeout_s: float) -> dict[str, object]:
    import os

    os.environ.update(env)
    from mediacache import MediaCache
    from mediacache.domain import CacheStatus

    async with MediaCache.from_env() as cache:
        asset_id = await cache.cache_image(url)
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            rec = await cache.get_asset(asset_id)
            if rec is not None and rec.status in (CacheStatus.CACHED, CacheStatus.FAILED):
                return {"status": rec.status.value, "seconds": time.monotonic() - t0, "sha256": rec.sha256,
                        "size_bytes": rec.size_bytes, "error": rec.error}
            await asyncio.sleep(0.05)
        raise SystemExit(f"not cached after {timeout_s} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--storage", choices=["local", "s3"], default="local")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    size = args.size_mb * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="mc-bench-mem-") as tmp, origin() as base:
        data_dir = Path(tmp)
        env = bench_env(data_dir, MEDIACACHE_STORAGE=args.storage, MEDIACACHE_MAX_BYTES=str(4 * size + 1))
        subprocess.run([sys.executable, "-m", "mediacache", "db", "upgrade"], env=env, check=True,
                       capture_output=True)
        procs = start_workers(env, 1, args.concurrency, data_dir)
        try:
            pid = procs[0].pid
            idle_rss = rss_mib(pid)
            result = asyncio.run(wait_cached(env, f"{base}/big/1.mp4?size={size}", timeout_s=600))
            peak = peak_rss_mib(pid)
        finally:
            stop_workers(procs)
            drop_queue_keys(env)
    print(json.dumps({
        "bench": "memory", "storage": args.storage, "size_mib": args.size_mb, "status": result["status"],
        "seconds": round(float(result["seconds"]), 2),  # type: ignore[arg-type]
        "mib_per_s": round(args.size_mb / float(result["seconds"]), 1),  # type: ignore[arg-type]
        "worker_idle_rss_mib": round(idle_rss, 1), "worker_peak_rss_mib": round(peak, 1),
        "sha256_ok": result["sha256"] == expected_sha256("big", 1, size),
    }))


if __name__ == "__main__":
    main()
