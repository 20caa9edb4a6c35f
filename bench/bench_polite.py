"""Throughput of N x SIZE downloads through one in-process worker, with the host limiter on or off.

    PYTHONPATH=src python bench/bench_polite.py [--n 2000] [--size 51200] [--concurrency 16] [--rounds 3]
        [--cases off,default] [--origin process|thread]

Each round runs every case once, in turn (off, default, off, default, ...), so that a neighbour's
load on the shared machine falls on both alike; the summary gives the median of each case and
its ratio to the first case. Cases: `off` (MEDIACACHE_HOST_LIMITING=false), `default` (the limiter
with the default rules, `*=unlimited:64`), `limited` (`*=1000000/s:1000`: every check runs, none
binds), or any MEDIACACHE_HOST_LIMITS value. `--no-hiredis` hides hiredis from redis-py (its
pure-Python parser then reads every reply, BullMQ's too), to measure what hiredis brings.

Each run: a fresh SQLite file, local storage, no derivatives, Redis at 127.0.0.1:6379 under a
private prefix. The origin is bench/origin.py in its own process by default
(its CPU then stays out of the worker's); `--origin thread` runs the test origin in this process.

Per run: wall time, downloads/s, and this process's CPU time per download (the worker's CPU; on
a shared machine it is noisy too, since a neighbour's load slows every instruction down). Last,
one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if "--no-hiredis" in sys.argv:
    sys.modules["hiredis"] = None  # type: ignore[assignment]  # before redis-py looks for it

import redis.asyncio as aioredis
from common import HERE
from common import origin as origin_process
from redis.utils import HIREDIS_AVAILABLE

from mediacache.db.schema import upgrade
from mediacache.service import MediaCache
from mediacache.settings import load_settings
from mediacache.worker import CacheWorker

CASES: dict[str, dict[str, Any]] = {"off": {"host_limiting": False}, "default": {"host_limits": ""},
                                    "limited": {"host_limits": "*=1000000/s:1000"}}


async def one_run(case: str, n: int, size: int, concurrency: int, base_url: str) -> dict[str, float]:
    overrides = CASES.get(case, {"host_limits": case})
    with tempfile.TemporaryDirectory() as tmp:
        prefix = f"bench-polite-{uuid.uuid4().hex[:8]}"
        settings = load_settings(env_file=None, database_url=f"sqlite+aiosqlite:///{tmp}/b.db", data_dir=Path(tmp),
                                 queue_prefix=prefix, signing_secret="bench", allowed_networks="127.0.0.0/8",
                                 storage="local", derive="off", **overrides)
        await asyncio.to_thread(upgrade, settings)
        cache = MediaCache(settings)
        worker = CacheWorker(cache, concurrency=concurrency)
        await worker.start()
        try:
            started, cpu_started = time.perf_counter(), time.process_time()
            await cache.cache_images([f"{base_url}/media/{i}.jpg?size={size}&r={prefix}" for i in range(n)])
            while True:
                stats = await cache.cache_stats()
                if stats.cached + stats.failed >= n:
                    break
                await asyncio.sleep(0.05)
            elapsed_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
            if stats.failed:
                raise SystemExit(f"{case}: {stats.failed} downloads failed: {stats}")
        finally:
            await worker.stop(grace_s=5)
            await cache.close()
            client = aioredis.Redis()
            keys = [k async for k in client.scan_iter(f"{prefix}:*", count=1000)]
            for start in range(0, len(keys), 500):
                await client.delete(*keys[start:start + 500])
            await client.aclose()
    run = {"elapsed_s": elapsed_s, "per_s": n / elapsed_s, "cpu_ms": cpu_s / n * 1000}
    print(f"  {case:<10} {n} x {size // 1024} KiB: {elapsed_s:6.2f} s, {run['per_s']:6.1f} downloads/s, "
          f"{run['cpu_ms']:.2f} ms CPU per download", flush=True)
    return run


@contextlib.contextmanager
def thread_origin() -> Iterator[str]:
    sys.path.insert(0, str(HERE.parent))
    from tests.support.origin import Origin

    server = Origin().start()
    try:
        yield server.base_url
    finally:
        server.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=50 * 1024)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", default="off,default")
    parser.add_argument("--origin", choices=("process", "thread"), default="process")
    parser.add_argument("--origin-port", type=int, default=8791)
    parser.add_argument("--no-hiredis", action="store_true", help="redis-py without hiredis (see above)")
    args = parser.parse_args()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    runs: dict[str, list[dict[str, float]]] = {case: [] for case in cases}
    server = origin_process(args.origin_port) if args.origin == "process" else thread_origin()
    with server as base_url:
        # One short run first: imports, connections and the origin's first requests are not measured.
        await one_run(cases[0], min(200, args.n), args.size, args.concurrency, base_url)
        for r in range(args.rounds):
            print(f"round {r + 1}", flush=True)
            for case in cases:
                runs[case].append(await one_run(case, args.n, args.size, args.concurrency, base_url))

    base = cases[0]
    summary: dict[str, dict[str, Any]] = {}
    for case in cases:
        rates = [run["per_s"] for run in runs[case]]
        cpu = [run["cpu_ms"] for run in runs[case]]
        summary[case] = {"per_s_median": round(statistics.median(rates), 1), "per_s": [round(x, 1) for x in rates],
                         "cpu_ms_median": round(statistics.median(cpu), 3), "cpu_ms": [round(x, 3) for x in cpu]}
    print(f"\nmedians of {args.rounds} runs each ({args.n} x {args.size // 1024} KiB, concurrency "
          f"{args.concurrency}, origin in {args.origin}, hiredis {'on' if HIREDIS_AVAILABLE else 'off'}):")
    for case in cases:
        s = summary[case]
        ratio = s["per_s_median"] / summary[base]["per_s_median"]
        cpu_ratio = s["cpu_ms_median"] / summary[base]["cpu_ms_median"]
        print(f"  {case:<10} {s['per_s_median']:7.1f} downloads/s ({ratio:5.3f} of {base}; runs "
              f"{', '.join(f'{x:.1f}' for x in s['per_s'])}), {s['cpu_ms_median']:.2f} ms CPU per download "
              f"({cpu_ratio:5.3f} of {base})")
    print(json.dumps({"bench": "polite", "n": args.n, "size": args.size, "concurrency": args.concurrency,
                      "origin": args.origin, "hiredis": HIREDIS_AVAILABLE, "rounds": args.rounds, "cases": summary}))


if __name__ == "__main__":
    asyncio.run(main())
