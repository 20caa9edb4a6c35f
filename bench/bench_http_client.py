"""CPU per GET of HTTP clients behind the SSRF guard: httpx, httpcore alone, aiohttp, and the Fetcher.

    PYTHONPATH=src python bench/bench_http_client.py [--n 2000] [--size 51200] [--concurrency 1,16,64,256]
        [--rounds 3] [--clients httpx,httpcore,aiohttp,fetcher]

Each GET fetches SIZE bytes from bench/origin.py (its own process on 127.0.0.1, so its CPU stays
out of this one) and streams the body to a sink that counts the bytes. The clients:

- `httpx`: as mediacache used it for downloads: an AsyncClient on `guarded_transport` (the
  resolving, checking httpcore backend of netguard.py), the same headers, time-outs and redirect
  hook, `send(stream=True)` and `aiter_raw()`.
- `httpcore`: the same guarded pool without httpx on top (`GuardedTransport._pool.stream`).
- `aiohttp`: a ClientSession on `guarded_connector` (a resolver that checks every address, a socket
  factory that checks the address each socket connects to), no cookie jar, no automatic
  decompression, `content.iter_chunked(64 KiB)`.
- `fetcher`: mediacache's `Fetcher` as it is on this branch: URL checks, expiry, redirect handling,
  status and size checks, content sniffing (`open` and `media_body`), on whichever client it uses.

A point is one client at one concurrency: one pool, warmed with 2 x concurrency GETs (connections
open, imports done), then N GETs by `concurrency` tasks; this process's CPU time (user + system)
over N. Every round runs every point once, clients interleaved, so a neighbour's load falls on all
alike; the table gives the median of the rounds. Last, one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from common import origin as origin_process

from mediacache.fetching.fetch import Fetcher
from mediacache.fetching.netguard import AddressPolicy, GuardedTransport
from mediacache.fetching.urls import check_redirect
from mediacache.settings import load_settings

POLICY = AddressPolicy(["127.0.0.0/8"])
HEADERS = {"User-Agent": "mediacache-bench", "Accept": "image/*,video/*,audio/*,*/*;q=0.5",
           "Accept-Encoding": "identity"}
CONNECT_TIMEOUT_S, READ_TIMEOUT_S = 5.0, 15.0
CHUNK_BYTES = 64 * 1024

Get = Callable[[str], Awaitable[int]]  # one GET of a URL; the body's length


async def _check_location(response: httpx.Response) -> None:
    if response.has_redirect_location:
        check_redirect(response.request.url, response.headers["location"])


@asynccontextmanager
async def httpx_client(pool_size: int) -> AsyncIterator[Get]:
    limits = httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size)
    transport = GuardedTransport(POLICY, connect_timeout_s=CONNECT_TIMEOUT_S, limits=limits)
    client = httpx.AsyncClient(
        transport=transport, follow_redirects=False, trust_env=False, headers=HEADERS,
        timeout=httpx.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S, write=READ_TIMEOUT_S,
                              pool=CONNECT_TIMEOUT_S),
        event_hooks={"response": [_check_location]})

    async def get(url: str) -> int:
        response = await client.send(client.build_request("GET", url), stream=True)
        received = 0
        try:
            async for raw in response.aiter_raw():
                received += len(raw)
        finally:
            await response.aclose()
        return received

    try:
        yield get
    finally:
        await client.aclose()


@asynccontextmanager
async def httpcore_client(pool_size: int) -> AsyncIterator[Get]:
    limits = httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size)
    pool = GuardedTransport(POLICY, connect_timeout_s=CONNECT_TIMEOUT_S, limits=limits)._pool
    headers = list(HEADERS.items())
    extensions = {"timeout": {"connect": CONNECT_TIMEOUT_S, "read": READ_TIMEOUT_S, "write": READ_TIMEOUT_S,
                              "pool": CONNECT_TIMEOUT_S}}

    async def get(url: str) -> int:
        received = 0
        async with pool.stream("GET", url, headers=headers, extensions=extensions) as response:
            async for raw in response.aiter_stream():
                received += len(raw)
        return received

    try:
        yield get
    finally:
        await pool.aclose()


@asynccontextmanager
async def aiohttp_client(pool_size: int) -> AsyncIterator[Get]:
    # Imported here, so that `--clients fetcher` also runs on sources from before the guard existed.
    from mediacache.fetching.guarded_connector import guarded_connector

    session = aiohttp.ClientSession(
        connector=guarded_connector(POLICY, limit=pool_size), headers=HEADERS, auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
        timeout=aiohttp.ClientTimeout(connect=CONNECT_TIMEOUT_S, sock_read=READ_TIMEOUT_S))

    async def get(url: str) -> int:
        received = 0
        async with session.get(url, allow_redirects=False) as response:
            async for raw in response.content.iter_chunked(CHUNK_BYTES):
                received += len(raw)
        return received

    try:
        yield get
    finally:
        await session.close()


@asynccontextmanager
async def fetcher_client(pool_size: int) -> AsyncIterator[Get]:
    fetcher = Fetcher(load_settings(env_file=None, allowed_networks="127.0.0.0/8", data_dir=Path("/tmp")),
                      max_connections=pool_size)
    allowed = ["image/*"]

    async def get(url: str) -> int:
        received = 0
        async with fetcher.open(url) as download:
            _type, body = await download.media_body(allowed)
            async for chunk in body:
                received += len(chunk)
        return received

    try:
        yield get
    finally:
        await fetcher.close()


CLIENTS: dict[str, Callable[[int], Any]] = {"httpx": httpx_client, "httpcore": httpcore_client,
                                            "aiohttp": aiohttp_client, "fetcher": fetcher_client}


async def one_point(client: str, concurrency: int, n: int, size: int, base_url: str, run: int) -> dict[str, float]:
    urls = [f"{base_url}/media/{i}.jpg?size={size}&r={run}" for i in range(n + 2 * concurrency)]
    # The worker's own pool size (worker/runner.py).
    async with CLIENTS[client](max(10, concurrency * 2)) as get:
        async def drain(todo: list[str]) -> int:
            total = 0
            while todo:
                total += await get(todo.pop())
            return total

        async def run_all(todo: list[str]) -> int:
            return sum(await asyncio.gather(*(drain(todo) for _ in range(concurrency))))

        await run_all(urls[n:])
        gc.collect()
        todo = urls[:n]
        started, cpu_started = time.perf_counter(), time.process_time()
        received = await run_all(todo)
        elapsed_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    if received != n * size:
        raise SystemExit(f"{client} at {concurrency}: received {received} bytes, expected {n * size}")
    return {"cpu_us": cpu_s / n * 1e6, "per_s": n / elapsed_s}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=50 * 1024)
    parser.add_argument("--concurrency", default="1,16,64,256")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", default="httpx,httpcore,aiohttp,fetcher")
    parser.add_argument("--origin-port", type=int, default=8792)
    args = parser.parse_args()
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    levels = [int(c) for c in args.concurrency.split(",")]
    runs: dict[str, dict[int, list[dict[str, float]]]] = {c: {level: [] for level in levels} for c in clients}
    with origin_process(args.origin_port) as base_url:
        for r in range(args.rounds):
            print(f"round {r + 1}", flush=True)
            for level in levels:
                # Rotate the order each round, so no client always runs right after another.
                for client in clients[r % len(clients):] + clients[:r % len(clients)]:
                    point = await one_point(client, level, args.n, args.size, base_url, r)
                    runs[client][level].append(point)
                    print(f"  {client:<9} c={level:<4} {point['cpu_us']:7.0f} us CPU per GET, "
                          f"{point['per_s']:7.0f} GET/s", flush=True)

    summary = {c: {str(level): {"cpu_us_median": round(statistics.median(p["cpu_us"] for p in runs[c][level]), 1),
                                "cpu_us": [round(p["cpu_us"], 1) for p in runs[c][level]],
                                "per_s_median": round(statistics.median(p["per_s"] for p in runs[c][level]), 1)}
                   for level in levels} for c in clients}
    base = clients[0]
    print(f"\nmedians of {args.rounds} rounds, {args.n} GETs of {args.size // 1024} KiB per point; "
          f"CPU per GET in microseconds (ratio to {base}), GET/s")
    print("| client | " + " | ".join(f"c={level}" for level in levels) + " |")
    print("|---|" + "---|" * len(levels))
    for c in clients:
        cells = []
        for level in levels:
            s = summary[c][str(level)]
            ratio = s["cpu_us_median"] / summary[base][str(level)]["cpu_us_median"]
            cells.append(f"{s['cpu_us_median']:.0f} us ({ratio:.2f}), {s['per_s_median']:.0f}/s")
        print(f"| {c} | " + " | ".join(cells) + " |")
    print(json.dumps({"bench": "http_client", "n": args.n, "size": args.size, "rounds": args.rounds,
                      "clients": summary}))


if __name__ == "__main__":
    asyncio.run(main())
