#!/usr/bin/env python3
"""Chaos run: cache many assets with several workers while killing a random worker every few seconds.

    .venv/bin/python bench/chaos.py [--assets 1000] [--workers 3] [--kill-every-s 3] [--duplicates 0.5]

Each kill is a SIGKILL (no clean shutdown); the killed worker is started again at once. `--assets` is
the number of URLs enqueued. With `--duplicates F`, that fraction of them are duplicates of the
others, enqueued in 20 batches while the workers run (each duplicate in a later batch than the URL it
duplicates, so it meets that asset PENDING, DOWNLOADING or CACHED): half are the same media behind a
differently signed link (same path, other x-expires/x-signature: URL deduplication must answer them
with the existing asset), half are the same bytes at another path (a new asset that content
deduplication must let share the stored object).

When every asset has settled and the queue is empty (or the deadline passes) it checks, prints one
line per check, and then one JSON line: assets CACHED, FAILED and stuck (PENDING/DOWNLOADING), assets
with more than one stored object of their own, distinct stored objects against distinct contents,
repeat requests that URL deduplication answered, the bucket check of `mediacache usage
--check-bucket` (objects no asset owns, assets whose object is missing), stored files that do not
match the origin's sha256, and the origin's downloads against the assets and their download attempts.
It exits 1 when a check fails. The origin is the test suite's (tests/support/origin.py), in a thread
of this process, so its request log is this run's alone.
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
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from common import bench_env, drop_queue_keys, start_workers, stop_workers  # noqa: E402
from tests.support.origin import Origin, sha256_of  # noqa: E402

if TYPE_CHECKING:
    from mediacache import MediaCache

BIG_BYTES = 4 * 1024 * 1024
SMALL_BYTES = 51200
ENQUEUE_BATCHES = 20  # with duplicates; one per poll of the run's loop
POLL_S = 0.2
LINK_LIFETIME_S = 3600


@dataclass(frozen=True)
class Link:
    """One enqueued URL and what the origin serves behind it."""

    url: str
    kind: str  # "media" (a 50 KiB image) or "big" (a 4 MiB video): with `n` and `size`, the bytes
    n: int
    size: int
    batch: int
    of: int | None = None  # for a duplicate, the index of the link it duplicates
    same_path: bool = False  # a duplicate that is the same path signed again (URL dedup), not a copy


def plan(origin: Origin, total: int, duplicates: float, now_s: int) -> list[Link]:
    """The run's URLs: originals (every tenth a video that takes long enough to be killed
    mid-download), then the duplicates, alternately re-signed links and copies at another path, of
    originals taken in random order."""
    n_duplicates = round(total * duplicates)
    n_originals = total - n_duplicates
    last_batch = ENQUEUE_BATCHES - 1 if n_duplicates else 0
    links = []
    for i in range(n_originals):
        kind, ext, size = ("big", "mp4", BIG_BYTES) if i % 10 == 0 else ("media", "jpg", SMALL_BYTES)
        links.append(Link(origin.url(f"/{kind}/{i}.{ext}?size={size}&x-expires={now_s + LINK_LIFETIME_S}"
                                     f"&x-signature=o{i}"),
                          kind, i, size, batch=random.randint(0, max(last_batch - 1, 0))))
    targets = list(range(n_originals))
    random.shuffle(targets)
    for k in range(n_duplicates):
        target = targets[k % n_originals]
        of = links[target]
        ext = "mp4" if of.kind == "big" else "jpg"
        batch = random.randint(of.batch + 1, last_batch)
        if k % 2 == 0:
            # Expires later than the original: the asset takes this link for its next download.
            url = origin.url(f"/{of.kind}/{of.n}.{ext}?size={of.size}"
                             f"&x-expires={now_s + LINK_LIFETIME_S + 1 + k}&x-signature=d{k}")
        else:
            url = origin.url(f"/alias/copy{k}/{of.n}.{ext}?size={of.size}")
        links.append(Link(url, of.kind, of.n, of.size, batch, of=target, same_path=k % 2 == 0))
    return links


@dataclass
class Check:
    name: str
    ok: bool
    figures: str


def expected_hits(links: list[Link]) -> int:
    """Repeat requests that an existing asset answers: a source key requested again in a later
    batch (within one batch, `cache_images` counts one request per source key)."""
    root = {i: (link.of if link.same_path and link.of is not None else i) for i, link in enumerate(links)}
    batches: dict[int, set[int]] = {}
    for i, link in enumerate(links):
        batches.setdefault(root[i], set()).add(link.batch)
    return sum(len(b) - 1 for b in batches.values())


async def run(args: argparse.Namespace, env: dict[str, str], origin: Origin, log_dir: Path) -> dict[str, object]:
    os.environ.update(env)
    from mediacache import MediaCache
    from mediacache.domain import CacheStatus

    links = plan(origin, args.assets, args.duplicates, int(time.time()))
    n_assets = sum(1 for link in links if not link.same_path)
    n_contents = sum(1 for link in links if link.of is None)
    workers = start_workers(env, args.workers, args.concurrency, log_dir)
    kills = 0
    ids: list[uuid.UUID | None] = [None] * len(links)
    n_batches = max(link.batch for link in links) + 1
    async with MediaCache.from_env() as cache:
        t0 = time.monotonic()
        next_kill = t0 + args.kill_every_s
        next_batch = 0
        try:
            while time.monotonic() - t0 < args.deadline_s:
                if next_batch < n_batches:
                    todo = [i for i, link in enumerate(links) if link.batch == next_batch]
                    if todo:
                        for i, asset_id in zip(todo, await cache.cache_images([links[i].url for i in todo]),
                                               strict=True):
                            ids[i] = asset_id
                    next_batch += 1
                elif await _settled(cache):
                    break
                if time.monotonic() >= next_kill:
                    victim = random.randrange(len(workers))
                    workers[victim].kill()
                    workers[victim].wait()
                    kills += 1
                    workers[victim] = start_workers(env, 1, args.concurrency, log_dir / f"restart-{kills}")[0]
                    next_kill = time.monotonic() + args.kill_every_s
                await asyncio.sleep(POLL_S)
            elapsed_s = time.monotonic() - t0
        finally:
            stop_workers(workers)

        stats = await cache.cache_stats()
        usage = await cache.usage(check_bucket=True)
        assert usage.bucket is not None
        records = await cache.get_assets([i for i in ids if i is not None])
        objects_root = cache.settings.objects_dir / "media"
        duplicated = sum(1 for i in records if len(list((objects_root / str(i)).glob("*"))) > 1)
        cached = {i: r for i, r in records.items() if r.status is CacheStatus.CACHED}
        misplaced = sum(1 for i, link in enumerate(links) if ids[i] is None or ids[i] not in cached
                        or (link.of is not None and (ids[i] == ids[link.of]) != link.same_path))
        contents = len({r.sha256 for r in cached.values()})
        mismatched = 0
        for link, link_id in zip(links, ids, strict=True):
            # A re-signed link's asset is its original's, checked with that one.
            rec = cached.get(link_id) if link_id is not None else None
            if rec is None or rec.cache_key is None or link.same_path:
                continue
            path = cache.settings.objects_dir / rec.cache_key
            stored = sha256_file(path) if path.is_file() else None
            if stored != rec.sha256 or stored != sha256_of(link.kind, link.n, link.size):
                mismatched += 1
        attempts = sum(r.attempts for r in records.values())
    downloads = len(origin.requests)
    stuck = stats.pending + stats.downloading
    hits = expected_hits(links)
    checks = [
        Check("every asset CACHED", (stats.cached, stats.failed, stuck, stats.total) == (n_assets, 0, 0, n_assets),
              f"{stats.cached} CACHED of {n_assets} assets, {stats.failed} FAILED, {stuck} stuck"),
        Check("each URL on its asset", misplaced == 0 and len(records) == n_assets,
              f"{len(links)} URLs on {len(records)} assets, {misplaced} on a wrong or unCACHED asset"),
        Check("URL dedup answered the repeats", usage.downloads_avoided == hits,
              f"{usage.downloads_avoided} repeat requests answered by an existing asset, {hits} expected"),
        Check("one object per content", usage.stored_objects == contents == n_contents,
              f"{usage.stored_objects} distinct objects, {contents} distinct contents, {n_contents} expected"),
        Check("no asset's object missing", usage.bucket.missing_objects == 0,
              f"{usage.bucket.missing_objects} missing objects"),
        Check("no object without an owner", usage.bucket.orphan_objects == 0,
              f"{usage.bucket.orphan_objects} orphan objects ({usage.bucket.orphan_bytes} bytes)"),
        Check("no asset with two objects of its own", duplicated == 0, f"{duplicated} duplicated"),
        Check("stored bytes match the origin", mismatched == 0, f"{mismatched} sha256 mismatches"),
        Check("downloads: one per asset, more only for attempts a kill cut short", n_assets <= downloads <= attempts,
              f"{downloads} downloads at the origin for {n_assets} unique URLs ({len(links)} URLs), "
              f"{attempts} download attempts, {kills} kills"),
    ]
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.figures}")
    return {"bench": "chaos", "urls": len(links), "duplicates": args.duplicates,
            "resigned_links": sum(1 for link in links if link.same_path),
            "path_copies": sum(1 for link in links if link.of is not None and not link.same_path),
            "assets": n_assets, "workers": args.workers, "kills": kills, "seconds": round(elapsed_s, 1),
            "cached": stats.cached, "failed": stats.failed, "stuck": stuck, "duplicated": duplicated,
            "objects": usage.stored_objects, "contents": contents, "url_dedup_hits": usage.downloads_avoided,
            "bytes_not_stored": usage.bytes_not_stored, "orphan_objects": usage.bucket.orphan_objects,
            "missing_objects": usage.bucket.missing_objects, "sha256_mismatches": mismatched,
            "downloads": downloads, "attempts": attempts,
            "failed_checks": [c.name for c in checks if not c.ok]}


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


async def _settled(cache: MediaCache) -> bool:
    """Every asset CACHED or FAILED and no job left: a job merges copies of the same bytes after it
    recorded its asset, so the objects are only final once the queue is empty."""
    stats = await cache.cache_stats()
    if stats.pending or stats.downloading:
        return False
    queue = await cache.queue_stats()
    return queue.waiting + queue.active + queue.delayed == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=1000, help="URLs to enqueue")
    parser.add_argument("--duplicates", type=float, default=0.0,
                        help="fraction of the URLs that duplicate others (0 <= F < 1)")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--kill-every-s", type=float, default=3.0)
    parser.add_argument("--deadline-s", type=float, default=600.0)
    parser.add_argument("--database-url", help="DATABASE_URL of the run (default: the environment's, else SQLite)")
    parser.add_argument("--db-pgbouncer", action="store_true",
                        help="the database is behind PgBouncer in transaction mode (MEDIACACHE_DB_PGBOUNCER)")
    args = parser.parse_args()
    if args.assets < 1:
        parser.error(f"--assets must be at least 1; got {args.assets}")
    if not 0 <= args.duplicates < 1 or round(args.assets * args.duplicates) >= args.assets:
        parser.error(f"--duplicates is the fraction of the URLs that duplicate others, 0 <= F < 1, and leaves "
                     f"at least one URL to duplicate; got {args.duplicates} of {args.assets}")
    database: dict[str, str] = {}
    if args.database_url:
        database["DATABASE_URL"] = args.database_url
    if args.db_pgbouncer:
        database["MEDIACACHE_DB_PGBOUNCER"] = "true"
    origin = Origin().start()
    try:
        with tempfile.TemporaryDirectory(prefix="mc-chaos-") as tmp:
            data_dir = Path(tmp)
            # Short locks and leases, so killed work is taken over within seconds.
            env = bench_env(data_dir, MEDIACACHE_LOCK_DURATION_MS="2000", MEDIACACHE_LEASE_S="3",
                            MEDIACACHE_RECONCILE_INTERVAL_S="5", **database)
            subprocess.run([sys.executable, "-m", "mediacache", "db", "upgrade"], env=env, check=True,
                           capture_output=True)
            try:
                result = asyncio.run(run(args, env, origin, data_dir))
            finally:
                drop_queue_keys(env)
    finally:
        origin.stop()
    print(json.dumps(result))
    if result["failed_checks"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
