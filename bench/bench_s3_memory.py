#!/usr/bin/env python3
"""Memory and speed of S3Store.put_stream into a real SeaweedFS: peak RSS must not grow with the size.

    .venv/bin/python bench/bench_s3_memory.py [--size-mb 300] [--small-puts 200]

Uses (or starts) the test SeaweedFS of tests/support/s3server.py and a throwaway bucket. Streams a
30 MiB warm-up, then a `--size-mb` object generated on the fly, and prints one JSON line: the
process's peak RSS (VmHWM) at the start, after the warm-up (so before the big upload) and after
it, the big upload's MiB/s, and the rate of sequential and concurrent 50 KiB puts (the
single-PUT path that images take).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.s3server import running_server, temporary_bucket

from mediacache.storage.s3 import S3Store

MiB = 1024 * 1024
_CHUNK_BYTES = 64 * 1024  # about what an HTTP download hands over per read


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} missing from /proc/self/status")


async def generated(size_bytes: int) -> AsyncIterator[bytes]:
    """`size_bytes` made on the fly: one random 64 KiB block, over and over; nothing is held."""
    block = os.urandom(_CHUNK_BYTES)
    sent = 0
    while sent < size_bytes:
        n = min(_CHUNK_BYTES, size_bytes - sent)
        yield block if n == _CHUNK_BYTES else block[:n]
        sent += n


async def timed_put(store: S3Store, key: str, size_bytes: int) -> float:
    started = time.perf_counter()
    written = await store.put_stream(key, generated(size_bytes), content_type="video/mp4")
    elapsed_s = time.perf_counter() - started
    info = await store.head(key)
    assert written == size_bytes and info is not None and info.size_bytes == size_bytes, (written, info)
    await store.delete(key)
    return elapsed_s


async def small_puts(store: S3Store, count: int, concurrency: int) -> float:
    body = os.urandom(50 * 1024)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            yield body

        async with semaphore:
            await store.put_stream(f"media/small/{i}.jpg", chunks(), content_type="image/jpeg")

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return count / (time.perf_counter() - started)


async def run(size_mb: int, small_count: int) -> dict[str, object]:
    with running_server() as server, temporary_bucket(server) as bucket:
        store = S3Store(bucket=bucket, endpoint=server.endpoint, region=server.region,
                        access_key_id=server.access_key_id, secret_access_key=server.secret_access_key)
        await store.check_writable()
        hwm_start = _status_mib("VmHWM")
        warmup_s = await timed_put(store, "media/bench/warmup.mp4", 30 * MiB)
        hwm_before = _status_mib("VmHWM")
        big_s = await timed_put(store, "media/bench/big.mp4", size_mb * MiB)
        hwm_after = _status_mib("VmHWM")
        sequential = await small_puts(store, small_count, 1)
        concurrent = await small_puts(store, small_count, 16)
        return {
            "bench": "s3_put_stream_memory",
            "size_mib": size_mb,
            "part_size_mib": store.part_size_bytes / MiB,
            "concurrent_parts": store.max_concurrent_parts,
            "mib_per_s": round(size_mb / big_s, 1),
            "seconds": round(big_s, 2),
            "warmup_30mib_mib_per_s": round(30 / warmup_s, 1),
            "peak_rss_at_start_mib": round(hwm_start, 1),
            "peak_rss_before_mib": round(hwm_before, 1),
            "peak_rss_after_mib": round(hwm_after, 1),
            "peak_rss_growth_mib": round(hwm_after - hwm_before, 1),
            "rss_now_mib": round(_status_mib("VmRSS"), 1),
            "small_50kib_puts_per_s_sequential": round(sequential, 1),
            "small_50kib_puts_per_s_16_concurrent": round(concurrent, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mb", type=int, default=300)
    parser.add_argument("--small-puts", type=int, default=200)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.size_mb, args.small_puts))))


if __name__ == "__main__":
    main()
