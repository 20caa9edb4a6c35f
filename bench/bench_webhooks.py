#!/usr/bin/env python3
"""Webhooks: p50/p99 from CACHED to the webhook's arrival at a local receiver, and the outbox's
extra database cost per asset.

    PYTHONPATH=src .venv/bin/python bench/bench_webhooks.py [--pg] [--rate 100] [--seconds 5]

Uses Redis at 127.0.0.1:6379 (a private queue prefix), the test suite's origin and receiver on
127.0.0.1, an in-process worker, and a SQLite file (or, with --pg, a temporary database on
127.0.0.1:5432 that it drops at the end). Prints one JSON line per part.
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
from tests.support.origin import Origin  # noqa: E402
from tests.support.receiver import Receiver  # noqa: E402
from tests.support.waiting import wait_until  # noqa: E402

from mediacache.db.repository import AssetRepository  # noqa: E402
from mediacache.db.schema import upgrade  # noqa: E402
from mediacache.service import MediaCache  # noqa: E402
from mediacache.settings import load_settings  # noqa: E402
from mediacache.worker import CacheWorker  # noqa: E402

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def outbox_cost(database_url: str, data_dir: Path, n: int) -> dict[str, Any]:
    """mark_cached timed with no webhook target (one UPDATE) and with one (UPDATE plus outbox INSERT)."""
    settings = load_settings(database_url=database_url, data_dir=data_dir, queue_prefix="bench-unused")
    async with MediaCache(settings) as mc:
        engine = mc.backends.engine
        plain = AssetRepository(engine, settings.database_display)
        with_outbox = AssetRepository(engine, settings.database_display, ["http://127.0.0.1:9/hooks"])
        timings: dict[str, list[float]] = {"plain": [], "outbox": []}
        for rnd in range(4):  # alternate, so that warm-up and drift hit both alike
            for name, repo in (("plain", plain), ("outbox", with_outbox)):
                ids = [uuid.uuid4() for _ in range(n)]
                await repo.insert_pending([(i, f"https://example.com/{i}.jpg") for i in ids])
                claims = [await repo.claim(i, uuid.uuid4().hex, 60) for i in ids]
                for claim in claims:
                    assert claim is not None
                    started = time.perf_counter()
                    ok = await repo.mark_cached(claim, cache_key=f"media/{claim.asset_id}/x.jpg",
                                                content_type="image/jpeg", size_bytes=2048, sha256="0" * 64)
                    if rnd > 0:
                        timings[name].append((time.perf_counter() - started) * 1e6)
                    assert ok
    p50_plain, p50_outbox = statistics.median(timings["plain"]), statistics.median(timings["outbox"])
    return {"part": "outbox_cost", "database": settings.sqlalchemy_url.split(":", 1)[0], "calls": len(timings["plain"]),
            "mark_cached_p50_us": round(p50_plain), "mark_cached_with_outbox_p50_us": round(p50_outbox),
            "extra_p50_us": round(p50_outbox - p50_plain),
            "mean_us": round(statistics.fmean(timings["plain"])),
            "mean_with_outbox_us": round(statistics.fmean(timings["outbox"]))}


async def latency(database_url: str, data_dir: Path, rate: float, seconds: float) -> dict[str, Any]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    origin, receiver = Origin().start(), Receiver().start()
    settings = load_settings(database_url=database_url, data_dir=data_dir, queue_prefix=prefix,
                             allowed_networks="127.0.0.0/8", signing_secret="bench", webhook_url=receiver.url,
                             webhook_secret=SECRET, webhook_allowed_networks="127.0.0.0/8")
    try:
        async with MediaCache(settings) as mc:
            worker = CacheWorker(mc, concurrency=32)
            await worker.start()
            ids: list[uuid.UUID] = []
            total = int(rate * seconds)
            started = time.monotonic()
            for k in range(total):
                # A steady rate: each asset is queued at its own slot of the schedule.
                await asyncio.sleep(max(0.0, started + k / rate - time.monotonic()))
                ids.append(await mc.cache_image(origin.url(f"/media/{k}.jpg?size=2048")))
            async def all_arrived() -> bool:
                return len(receiver.accepted()) >= total
            with contextlib.suppress(AssertionError):  # report what arrived in 60 s
                await wait_until(all_arrived, timeout_s=60, interval_s=0.1)
            arrived = {json.loads(r.body)["data"]["id"]: r.at for r in receiver.accepted()}
            records = await mc.get_assets(ids)
            await worker.stop(grace_s=5)
            lags_ms = [(arrived[str(i)] - rec.cached_at.timestamp()) * 1000 for i, rec in records.items()
                       if rec.cached_at is not None and str(i) in arrived]
            return {"part": "cached_to_webhook", "database": settings.sqlalchemy_url.split(":", 1)[0],
                    "rate_per_s": rate, "assets": total, "arrived": len(arrived),
                    "achieved_rate_per_s": round(total / (time.monotonic() - started), 1),
                    "p50_ms": round(pct(lags_ms, 0.50), 1), "p99_ms": round(pct(lags_ms, 0.99), 1),
                    "max_ms": round(max(lags_ms), 1)}
    finally:
        receiver.stop()
        origin.stop()
        client = aioredis.Redis(host="127.0.0.1", port=6379)
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pg", action="store_true", help="a temporary PostgreSQL database instead of SQLite")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--calls", type=int, default=300, help="mark_cached calls per round of the cost part")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        pg_name = f"mediacache_bench_{uuid.uuid4().hex[:8]}"
        if args.pg:
            conn = await asyncpg.connect(PG_ADMIN)
            await conn.execute(f'CREATE DATABASE "{pg_name}"')
            await conn.close()
            url = PG_ADMIN.rsplit("/", 1)[0] + f"/{pg_name}"
        else:
            url = f"sqlite+aiosqlite:///{data_dir / 'bench.db'}"
        try:
            await asyncio.to_thread(upgrade, load_settings(database_url=url, data_dir=data_dir))
            print(json.dumps(await outbox_cost(url, data_dir, args.calls)), flush=True)
            print(json.dumps(await latency(url, data_dir, args.rate, args.seconds)), flush=True)
        finally:
            if args.pg:
                conn = await asyncpg.connect(PG_ADMIN)
                await conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
                await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
