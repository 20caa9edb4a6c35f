#!/usr/bin/env python3
"""Soak: many assets through one mediacache worker process, watching it for leaks and slow-down.

    .venv/bin/python bench/soak.py [--assets 100000] [--concurrency 16] [--samples FILE] [--results FILE]

The mix, by asset index i (deterministic, so two runs get the same URLs): i % 50 == 7 answers 500
and i % 50 == 32 answers 404 (2 % failing; the 500s are retried, the 404s are not), i % 10 == 3 is
2 MiB (10 %, the streaming /big route), everything else 50 KiB (88 %). Same services as
bench/run_bench.py (bench/services.sh: PostgreSQL 127.0.0.1:55432, SeaweedFS S3, the origin; Redis
DB 5), emptied first. The producer keeps at most --backlog assets queued ahead of the worker, adding
them with cache_images() in batches of up to 1000, so it never starves the worker and Redis does not
hold every job at once.

Every --sample-every finished assets (default assets/100) the worker's /proc is read: VmRSS, VmHWM,
open file descriptors, its TCP connections (its socket inodes looked up in /proc/PID/net/tcp{,6}),
by peer (Redis, PostgreSQL, S3, origin), CPU seconds; and Redis's used_memory. The samples go to
--samples (JSONL, or CSV when the name ends in .csv). Then the figures against the targets:

    RSS growth from the 10 % point (10,000th asset of 100,000) to the end    < 10 MiB
    open file descriptors and TCP connections, same two points             no growth
    assets/s of the last 10 % against the first 10 %                       >= 0.9 x

Printed as `measured / target / met` lines, then one JSON summary line (also appended to
--results, which bench/compare.py and bench/plot.py read).

`--services env` is for a run on other services: DATABASE_URL (a SQLite URL works), the S3
variables or MEDIACACHE_STORAGE=local, ORIGIN_PORT; the origin is started if nothing listens there,
and Redis DB 5 is not flushed (the run's keys have their own prefix and are dropped afterwards).

The origin is a single host, so a per-host breaker would see every 500 of the mix as that one host
failing and pause all its downloads; the soak measures the worker, not politeness, so it sets
MEDIACACHE_HOST_BREAKER out of reach (pass `--set MEDIACACHE_HOST_BREAKER=5/30s:30s` for the
default). `--set KEY=VALUE` sets any mediacache setting for the worker. `--keep` leaves the stored
objects in the bucket (a 100,000-asset run stores about 24 GiB in SeaweedFS's data directory).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_seconds, drop_queue_keys, origin, peak_rss_mib, rss_mib, start_workers, stop_workers
from run_bench import bench_settings_env, parse_settings, reset, start_services, verify

SMALL_BYTES = 50 * 1024
LARGE_BYTES = 2 * 1024 * 1024
BATCH = 1000
RSS_GROWTH_TARGET_MIB = 10.0
THROUGHPUT_TARGET = 0.9
# How often the producer reads the counts (one cheap query on the counter rows). A sample is taken at
# the first look past each --sample-every assets, so looks must come faster than that many finish:
# a small run (300 assets, a sample every 3) finishes 3 in about 35 ms here, and 0.1 s between looks
# left a third to half of its samples out, more the quicker the worker.
POLL_S = 0.02
PEER_NAMES = ("redis", "postgres", "s3", "origin", "other")
DEFAULT_SETTINGS = {"MEDIACACHE_HOST_BREAKER": "1000000/1s:1s"}


def soak_url(origin: str, i: int) -> tuple[str, str]:
    """The URL of asset i and what it should end as: 'cached' or 'failed'."""
    if i % 50 == 7:
        return f"{origin}/media/{i}.jpg?size={SMALL_BYTES}&status=500", "failed"
    if i % 50 == 32:
        return f"{origin}/media/{i}.jpg?size={SMALL_BYTES}&status=404", "failed"
    if i % 10 == 3:
        return f"{origin}/big/{i}.mp4?size={LARGE_BYTES}", "cached"
    return f"{origin}/media/{i}.jpg?size={SMALL_BYTES}", "cached"


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed between the listing and the read
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def peer_ports(env: dict[str, str]) -> dict[int, str]:
    """The services' ports (from the workers' settings) and their role, for the TCP connection counts."""
    ports = {int(env.get("REDIS_PORT", "6379")): "redis",
             int(os.environ.get("ORIGIN_PORT", "8790")): "origin"}
    for key, role in (("DATABASE_URL", "postgres"), ("S3_ENDPOINT_URL", "s3")):
        parts = urlsplit(env.get(key, ""))
        if parts.scheme.startswith(("postgres", "http")):
            ports[parts.port or {"http": 80, "https": 443}.get(parts.scheme, 5432)] = role
    return ports


def tcp_connections(pid: int, peers: dict[int, str]) -> dict[str, int]:
    """The process's TCP sockets that have a peer, by the peer's role (from `peers`, else 'other')."""
    inodes = _socket_inodes(pid)
    by_peer: dict[str, int] = {}
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            remote, state, inode = fields[2], fields[3], fields[9]
            if inode not in inodes or state == "0A":  # 0A: LISTEN, no peer
                continue
            port = int(remote.rsplit(":", 1)[1], 16)
            peer = peers.get(port, "other")
            by_peer[peer] = by_peer.get(peer, 0) + 1
    return by_peer


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def sample(pid: int, peers: dict[int, str], finished: int, t_s: float, redis_used_mib: float) -> dict[str, Any]:
    tcp = tcp_connections(pid, peers)
    return {"assets": finished, "t_s": round(t_s, 3), "rss_mib": round(rss_mib(pid), 2),
            "peak_rss_mib": round(peak_rss_mib(pid), 2), "fds": open_fds(pid), "tcp": sum(tcp.values()),
            **{f"tcp_{peer}": tcp.get(peer, 0) for peer in PEER_NAMES},
            "cpu_s": round(cpu_seconds(pid), 2), "redis_used_mib": round(redis_used_mib, 2)}


def write_samples(path: Path, samples: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        if path.suffix == ".csv":
            writer = csv.DictWriter(f, fieldnames=list(samples[0]))
            writer.writeheader()
            writer.writerows(samples)
        else:
            f.writelines(json.dumps(s) + "\n" for s in samples)


def read_samples(path: Path) -> list[dict[str, Any]]:
    """Samples written by write_samples, JSONL or CSV (numbers as numbers)."""
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            return [{k: float(v) if "." in v else int(v) for k, v in row.items()} for row in csv.DictReader(f)]
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarize(samples: list[dict[str, Any]], assets: int) -> dict[str, Any]:
    """The soak's figures from its samples.

    RSS: the sample at the 10 % point against the last one. File descriptors and connections move
    with the downloads in flight, so their growth is the largest count among the samples of the
    last 10 % of assets against the largest among those from 10 % to 20 %: pools bounded by the
    concurrency reach the same peak in both windows, a leak does not. Throughput: assets/s of the
    first 10 % of assets against the last 10 %.
    """
    at_10 = next(s for s in samples if s["assets"] >= assets * 0.1)
    at_90 = next(s for s in samples if s["assets"] >= assets * 0.9)
    end = samples[-1]
    base = [s for s in samples if at_10["assets"] <= s["assets"] < assets * 0.2] or [at_10]
    last = [s for s in samples if s["assets"] >= at_90["assets"]]
    first_rate = at_10["assets"] / at_10["t_s"] if at_10["t_s"] > 0 else float("nan")
    last_rate = ((end["assets"] - at_90["assets"]) / (end["t_s"] - at_90["t_s"])
                 if end["t_s"] > at_90["t_s"] else float("nan"))
    peers = [k for k in samples[0] if k.startswith("tcp_")]

    def growth(key: str) -> int:
        return int(max(s[key] for s in last) - max(s[key] for s in base))
    return {
        "baseline_assets": at_10["assets"],
        "rss_at_baseline_mib": at_10["rss_mib"], "rss_end_mib": end["rss_mib"],
        "rss_growth_mib": round(end["rss_mib"] - at_10["rss_mib"], 2),
        "peak_rss_mib": end["peak_rss_mib"],
        "fds_base_max": max(s["fds"] for s in base), "fds_last_max": max(s["fds"] for s in last),
        "fd_growth": growth("fds"),
        "tcp_base_max": max(s["tcp"] for s in base), "tcp_last_max": max(s["tcp"] for s in last),
        "tcp_growth": growth("tcp"), "tcp_growth_by_peer": {k[4:]: growth(k) for k in peers},
        "first_10pct_assets_per_s": round(first_rate, 2), "last_10pct_assets_per_s": round(last_rate, 2),
        "throughput_ratio": round(last_rate / first_rate, 3) if first_rate else float("nan"),
        "worker_cpu_ms_per_asset": round((end["cpu_s"] - samples[0]["cpu_s"]) / max(end["assets"], 1) * 1000, 3),
        "redis_used_growth_mib": round(end["redis_used_mib"] - at_10["redis_used_mib"], 2),
    }


def target_lines(summary: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(what, measured, target, met) for the soak's four figures."""
    tenth = summary["assets"] // 10
    by_peer = ", ".join(f"{peer} {n:+d}" for peer, n in summary["tcp_growth_by_peer"].items() if n)
    return [
        (f"worker RSS growth, asset {summary['baseline_assets']:,} to {summary['assets']:,}",
         f"{summary['rss_growth_mib']:+.1f} MiB ({summary['rss_at_baseline_mib']:.1f} -> {summary['rss_end_mib']:.1f})",
         f"< {RSS_GROWTH_TARGET_MIB:.0f} MiB", summary["rss_growth_mib"] < RSS_GROWTH_TARGET_MIB),
        (f"open fds growth, most in assets {tenth:,}-{2 * tenth:,} to most in the last {tenth:,}",
         f"{summary['fd_growth']:+d} ({summary['fds_base_max']} -> {summary['fds_last_max']})", "none",
         summary["fd_growth"] <= 0),
        ("TCP connections growth, the same windows",
         f"{summary['tcp_growth']:+d} ({summary['tcp_base_max']} -> {summary['tcp_last_max']}"
         f"{'; ' + by_peer if by_peer else ''})", "none", summary["tcp_growth"] <= 0),
        ("assets/s, last 10 % against first 10 %",
         f"{summary['throughput_ratio']:.2f}x ({summary['last_10pct_assets_per_s']:.1f} vs "
         f"{summary['first_10pct_assets_per_s']:.1f})", f">= {THROUGHPUT_TARGET}x",
         summary["throughput_ratio"] >= THROUGHPUT_TARGET),
    ]


async def _redis_used_mib() -> float:
    import redis.asyncio as aioredis

    client = aioredis.Redis(host="127.0.0.1", port=6379, db=5)
    try:
        return int((await client.info("memory"))["used_memory"]) / 2**20
    finally:
        await client.aclose()


async def drive(env: dict[str, str], urls: list[str], pid: int, *, backlog: int, sample_every: int,
                timeout_s: float, stall_s: float) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Feeds the worker and samples it; returns the samples and the final counts."""
    os.environ.update(env)
    from mediacache import MediaCache
    from mediacache.domain import CacheStatus

    n = len(urls)
    samples: list[dict[str, Any]] = []
    peers = peer_ports(env)
    async with MediaCache.from_env() as cache:
        assets = cache.backends.assets
        await cache.backends.queue.ping()
        samples.append(sample(pid, peers, 0, 0.0, await _redis_used_mib()))
        t0 = time.perf_counter()
        enqueued = finished = 0
        next_sample = sample_every
        last_progress = (0, t0)
        while True:
            while enqueued < n and enqueued - finished < backlog:
                batch = urls[enqueued:enqueued + min(BATCH, backlog - (enqueued - finished))]
                await cache.cache_images(batch)
                enqueued += len(batch)
            by_status, _, _ = await assets.reports.counts()
            cached, failed = by_status[CacheStatus.CACHED], by_status[CacheStatus.FAILED]
            finished = cached + failed
            now = time.perf_counter()
            if finished >= next_sample or finished >= n:
                samples.append(sample(pid, peers, finished, now - t0, await _redis_used_mib()))
                while next_sample <= finished:
                    next_sample += sample_every
            if finished >= n:
                break
            if finished > last_progress[0]:
                last_progress = (finished, now)
            elif now - last_progress[1] > stall_s:
                raise SystemExit(f"soak: no asset finished for {stall_s:.0f} s at {finished}/{n}")
            if now - t0 > timeout_s:
                raise SystemExit(f"soak: timeout after {timeout_s:.0f} s at {finished}/{n}")
            await asyncio.sleep(POLL_S)
    return samples, {"cached": cached, "failed": failed}


async def empty_bucket(env: dict[str, str]) -> None:
    from tests.support.s3server import S3Server, delete_bucket

    server = S3Server(env["S3_ENDPOINT_URL"], env["R2_ACCESS_KEY_ID"], env["R2_SECRET_ACCESS_KEY"],
                      env.get("S3_REGION", "us-east-1"))
    await asyncio.to_thread(delete_bucket, server, env["R2_BUCKET_NAME"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=16, help="the worker's --concurrency")
    parser.add_argument("--sample-every", type=int, default=0, help="finished assets between samples (assets/100)")
    parser.add_argument("--backlog", type=int, default=5000, help="most assets queued ahead of the worker")
    parser.add_argument("--samples", type=Path, default=Path("/tmp/mediacache-soak-samples.jsonl"))
    parser.add_argument("--results", type=Path, help="append the JSON summary to this file too")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--timeout-s", type=float, default=4 * 3600)
    parser.add_argument("--keep", action="store_true", help="leave the stored objects in the bucket")
    parser.add_argument("--services", choices=["bench", "env"], default="bench",
                        help="bench: bench/services.sh's (default); env: the ones the environment names")
    parser.add_argument("--verify", type=int, default=int(os.environ.get("VERIFY_SAMPLE", 10)),
                        help="stored objects checked against the origin by sha256 afterwards")
    args = parser.parse_args()
    if args.assets < 20:
        raise SystemExit("--assets: at least 20 (the figures compare tenths of the run)")
    sample_every = args.sample_every or max(1, args.assets // 100)
    settings = {**DEFAULT_SETTINGS, **parse_settings(args.settings)}
    port = int(os.environ.get("ORIGIN_PORT", "8790"))
    if args.services == "bench":
        start_services()
    base = f"http://127.0.0.1:{port}"
    mix = [soak_url(base, i) for i in range(args.assets)]
    urls = [url for url, _ in mix]
    expected_cached = sum(end == "cached" for _, end in mix)
    with tempfile.TemporaryDirectory(prefix="mc-soak-") as tmp, \
            (origin(port) if args.services == "env" else nullcontext()):
        env = bench_settings_env(Path(tmp), settings)
        asyncio.run(reset(env, flush_redis=args.services == "bench"))
        [proc] = start_workers(env, 1, args.concurrency, Path(tmp) / "logs")
        try:
            samples, counts = asyncio.run(drive(env, urls, proc.pid, backlog=args.backlog, sample_every=sample_every,
                                                timeout_s=args.timeout_s, stall_s=300))
        finally:
            stop_workers([proc])
            drop_queue_keys(env)
        write_samples(args.samples, samples)
        ok = checked = 0
        if args.verify > 0:
            ok, checked = asyncio.run(verify(env, args.verify))

    total_s = samples[-1]["t_s"]
    summary: dict[str, Any] = {
        "kind": "soak", "workload": "soak", "impl": "mediacache", "assets": args.assets,
        "concurrency": args.concurrency, "cached": counts["cached"], "failed": counts["failed"],
        "expected_cached": expected_cached, "total_s": total_s,
        "assets_per_s": round(args.assets / total_s, 2) if total_s else None,
        **summarize(samples, args.assets), "samples": len(samples), "samples_file": str(args.samples),
        "settings": settings, "verified": f"{ok}/{checked}", "ts": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    rows = target_lines(summary)
    width = max(len(what) for what, *_ in rows)
    print(f"soak: {args.assets:,} assets through one worker at concurrency {args.concurrency} in {total_s:.1f} s "
          f"({summary['assets_per_s']} assets/s, {summary['worker_cpu_ms_per_asset']} ms worker CPU per asset); "
          f"{counts['cached']:,} cached (expected {expected_cached:,}), {counts['failed']:,} failed; "
          f"samples: {args.samples}")
    for what, measured, target, met in rows:
        print(f"{what:<{width}}  {measured} / {target} / {'met' if met else 'NOT MET'}")
    print(json.dumps(summary), flush=True)
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        with args.results.open("a") as f:
            f.write(json.dumps(summary) + "\n")
    # After the summary is out: emptying the bucket of a long soak can take minutes, and its
    # failure loses nothing the run measured.
    if env["MEDIACACHE_STORAGE"] == "s3" and not args.keep:
        try:
            asyncio.run(empty_bucket(env))
        except Exception as exc:
            print(f"soak: could not empty the bucket {env['R2_BUCKET_NAME']} ({exc!r}); the next "
                  "bench/run_bench.py or soak run empties it first", file=sys.stderr)
    if counts["cached"] != expected_cached or ok != checked:
        print(f"soak: {counts['cached']} cached where {expected_cached} were expected, "
              f"{ok}/{checked} sampled objects match the origin", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
