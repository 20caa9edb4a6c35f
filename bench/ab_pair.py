#!/usr/bin/env python3
"""Two mediacache variants measured at the same time on the same services: CPU per asset, paired.

    .venv/bin/python bench/ab_pair.py [--rounds 5] [--n 4000] [--size 51200] [--concurrency 16]
        [--a-path DIR] [--b-path DIR] [--a-set K=V ...] [--b-set K=V ...]

On this shared 2-core host the worker's CPU per asset drifts by a quarter between runs a minute
apart (the host's slow and fast phases), which hides a 10 % lever behind noise in alternating runs
of bench/run_bench.py. Here side A and side B run together in every round, so both see the same
phase, and the figure is the ratio B/A of their CPU per asset, round by round.

Each side has its own database (mediacache_bench_a/_b on the bench PostgreSQL), bucket, queue
prefix and worker process; `--a-path`/`--b-path` put another checkout's `src` first on the worker's
PYTHONPATH (a `git worktree` of the commit before a lever), `--a-set`/`--b-set` give it settings
(e.g. `--b-set MEDIACACHE_EVENT_LOOP=asyncio`). Both enqueue the same N origin URLs at once; the
side that starts first alternates between rounds. Services as bench/run_bench.py (bench/services.sh).
One JSON line per round, then the median ratio on the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from common import cpu_seconds, start_workers, stop_workers
from run_bench import BENCH_DB, bench_settings_env, origin_urls, parse_settings, reset, start_services, wait_settled

SIDES = ("a", "b")


def side_env(side: str, tmp: Path, src: str | None, settings: dict[str, str]) -> dict[str, str]:
    env = bench_settings_env(tmp / side, settings)
    env["DATABASE_URL"] = f"{BENCH_DB}_{side}"
    env["R2_BUCKET_NAME"] = f"mediacache-bench-{side}"
    if src:
        env["PYTHONPATH"] = str(Path(src).resolve() / "src")
    return env


async def run_side(env: dict[str, str], urls: list[str], pid: int, delay_s: float,
                   timeout_s: float) -> dict[str, float]:
    from mediacache import MediaCache
    from mediacache.settings import Settings

    values: dict[str, Any] = {k: v for k, v in env.items()
                              if k.startswith(("MEDIACACHE_", "REDIS_", "R2_", "S3_", "DATABASE_"))}
    settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    async with MediaCache(settings) as cache:
        await cache.backends.queue.ping()
        await cache.cache_stats()
        await asyncio.sleep(delay_s)
        cpu0 = cpu_seconds(pid)
        t0 = time.perf_counter()
        await cache.cache_images(urls)
        stats = await wait_settled(cache, len(urls), t0, timeout_s)
        total_s = time.perf_counter() - t0
        cpu_s = cpu_seconds(pid) - cpu0
    return {"cpu_ms_per_asset": cpu_s / len(urls) * 1000, "assets_per_s": stats.cached / total_s,
            "failed": len(urls) - stats.cached}


def one_round(args: argparse.Namespace, round_no: int, urls: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mc-ab-") as tmp:
        envs = {side: side_env(side, Path(tmp), getattr(args, f"{side}_path"),
                               parse_settings(getattr(args, f"{side}_set"))) for side in SIDES}
        for env in envs.values():
            asyncio.run(reset(env, flush_redis=False))
        procs = {side: start_workers(envs[side], 1, args.concurrency, Path(tmp) / side / "logs")[0] for side in SIDES}
        try:
            first = SIDES[round_no % 2]

            async def both() -> list[dict[str, float]]:
                return await asyncio.gather(*(run_side(envs[s], urls, procs[s].pid, 0.0 if s == first else 0.05,
                                                       args.timeout_s) for s in SIDES))

            results = dict(zip(SIDES, asyncio.run(both()), strict=True))
        finally:
            stop_workers(list(procs.values()))
    return {"round": round_no, **{f"{s}_{k}": round(v, 3) for s in SIDES for k, v in results[s].items()},
            "b_over_a_cpu": round(results["b"]["cpu_ms_per_asset"] / results["a"]["cpu_ms_per_asset"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--size", type=int, default=51200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--timeout-s", type=float, default=600)
    for side in SIDES:
        parser.add_argument(f"--{side}-path", default=None, help=f"checkout whose src side {side.upper()} runs")
        parser.add_argument(f"--{side}-set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    start_services()
    urls = origin_urls(args.n, args.size)
    ratios = []
    for round_no in range(args.rounds):
        record = one_round(args, round_no, urls)
        ratios.append(record["b_over_a_cpu"])
        print(json.dumps(record), flush=True)
    print(json.dumps({"rounds": args.rounds, "median_b_over_a_cpu": round(statistics.median(ratios), 3),
                      "min": min(ratios), "max": max(ratios)}), flush=True)


if __name__ == "__main__":
    main()
