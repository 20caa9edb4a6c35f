"""Cost of the host limiter per download: round trips and CPU per acquire+release pair.

    PYTHONPATH=src .venv/bin/python bench/bench_limiter.py [--pairs 1000] [--rounds 5] [--redis-port 6379]
        [--parser default|hiredis|python]

Prints a table and, last, one JSON line; figures are medians over the rounds (the machine is
shared). A pair is what the worker does per download: `acquire`, then `release_soon` (which does
not wait, and goes with the next call); "awaited release" cases wait for the release instead.
Round trips are counted one after another (trips/pair) and with 50 tasks at once (trips @50).
Client CPU is this process's CPU time per pair, one after another. Server time is Redis's own time
in EVALSHA per pair (INFO commandstats), counted only in rounds where no other client ran EVALSHA
(BullMQ's commands are scripts too). The floors are one and two EVALSHA of a script that only
returns 1: what redis-py and the network cost for any one or two scripted round trips.
`--parser` picks redis-py's reply parser (default: hiredis when installed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis

from mediacache.fetching.host_limiter import Grant, HostLimiter, Outcome
from mediacache.fetching.host_rules import DEFAULT_RULE, HostRule, parse_rule

CONCURRENT_TASKS = 50


@dataclass
class Figures:
    case: str
    pairs: int
    round_trips_per_pair: float
    round_trips_per_pair_concurrent: float
    client_cpu_us_per_pair: float
    server_us_per_pair: float | None
    wall_us_per_pair: float
    pairs_per_s_concurrent: float


class CountingRedis(aioredis.Redis):
    """A client that counts the commands it sends (each one is a round trip)."""

    commands = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands += 1
        return await super().execute_command(*args, **options)


async def _evalsha_stats(admin: aioredis.Redis) -> tuple[int, int]:
    stats = (await admin.info("commandstats")).get("cmdstat_evalsha") or {}
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


def limiter_pair(limiter: HostLimiter, rule: HostRule, hosts: int, *,
                 awaited: bool = False) -> Callable[[int], Awaitable[None]]:
    names = [f"h{i}.bench.test" for i in range(hosts)]

    async def pair(i: int) -> None:
        decision = await limiter.acquire(names[i % hosts], rule)
        if not isinstance(decision, Grant):
            raise SystemExit(f"the bench rule must grant every request; got {decision}")
        if awaited:
            await limiter.release(decision, Outcome.ok())
        else:
            limiter.release_soon(decision, Outcome.ok())

    return pair


def floor_pair(client: aioredis.Redis, calls: int) -> Callable[[int], Awaitable[None]]:
    script = client.register_script("return 1")

    async def pair(i: int) -> None:
        for _ in range(calls):
            await script(keys=["k"], args=[i])

    return pair


async def measure(case: str, client: CountingRedis, admin: aioredis.Redis, pair: Callable[[int], Awaitable[None]],
                  flush: Callable[[], Awaitable[None]], pairs: int, rounds: int, limiter: HostLimiter) -> Figures:
    def commands() -> int:
        # The limiter's batch calls go on a connection of its own, past execute_command.
        return client.commands + limiter.calls

    for i in range(CONCURRENT_TASKS):  # scripts loaded, connections made
        await pair(i)
    await flush()
    trips, trips_concurrent, cpu, wall, server, rates = [], [], [], [], [], []
    for _ in range(rounds):
        commands_before = commands()
        calls_before, usec_before = await _evalsha_stats(admin)
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        for i in range(pairs):
            await pair(i)
        await flush()  # the last release_soon, so that every pair is counted whole
        cpu.append((time.process_time() - cpu_before) / pairs * 1e6)
        wall.append((time.perf_counter() - wall_before) / pairs * 1e6)
        calls_after, usec_after = await _evalsha_stats(admin)
        trips.append((commands() - commands_before) / pairs)
        if calls_after - calls_before == commands() - commands_before:
            server.append((usec_after - usec_before) / pairs)

        per_task = pairs // CONCURRENT_TASKS

        async def task(offset: int, count: int = per_task) -> None:
            for i in range(count):
                await pair(offset + i)

        commands_before = commands()
        started = time.perf_counter()
        await asyncio.gather(*(task(k * per_task) for k in range(CONCURRENT_TASKS)))
        await flush()
        rates.append(per_task * CONCURRENT_TASKS / (time.perf_counter() - started))
        trips_concurrent.append((commands() - commands_before) / (per_task * CONCURRENT_TASKS))
    return Figures(case, pairs * rounds, statistics.median(trips), statistics.median(trips_concurrent),
                   statistics.median(cpu), statistics.median(server) if server else None, statistics.median(wall),
                   statistics.median(rates))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--parser", choices=("default", "hiredis", "python"), default="default")
    args = parser.parse_args()
    prefix = f"mcbench-hl-{uuid.uuid4().hex[:8]}"
    client = CountingRedis(host="127.0.0.1", port=args.redis_port, socket_timeout=5, max_connections=100)
    if args.parser != "default":
        from redis._parsers import _AsyncHiredisParser, _AsyncRESP2Parser

        parser_class = _AsyncHiredisParser if args.parser == "hiredis" else _AsyncRESP2Parser
        client.connection_pool.connection_kwargs["parser_class"] = parser_class
    admin = aioredis.Redis(host="127.0.0.1", port=args.redis_port, socket_timeout=5)
    limiter = HostLimiter(client, prefix)
    # A rule that grants every request but runs every check (rate and concurrency); the default
    # rule (no rate limit, 64 at a time); no limits at all.
    limited = parse_rule("*=1000000/s:1000")
    unlimited = parse_rule("*=unlimited")

    async def nothing() -> None:
        return None

    cases = [
        ("floor: 1 x EVALSHA 'return 1'", floor_pair(client, 1), nothing),
        ("floor: 2 x EVALSHA 'return 1'", floor_pair(client, 2), nothing),
        ("default rule, one host", limiter_pair(limiter, DEFAULT_RULE, 1), limiter.flush),
        ("rule, one host", limiter_pair(limiter, limited, 1), limiter.flush),
        ("no limits, one host", limiter_pair(limiter, unlimited, 1), limiter.flush),
        ("rule, 1000 hosts", limiter_pair(limiter, limited, 1000), limiter.flush),
        ("default rule, awaited release", limiter_pair(limiter, DEFAULT_RULE, 1, awaited=True), limiter.flush),
    ]
    try:
        figures = [await measure(name, client, admin, pair, flush, args.pairs, args.rounds, limiter)
                   for name, pair, flush in cases]
    finally:
        keys = [key async for key in admin.scan_iter(f"{prefix}:*", count=1000)]
        for start in range(0, len(keys), 500):
            await admin.delete(*keys[start:start + 500])
        await client.aclose()
        await admin.aclose()

    print(f"{'case':<31} {'trips/pair':>10} {f'trips @{CONCURRENT_TASKS}':>9} {'client CPU µs':>14} "
          f"{'server µs':>10} {'wall µs':>8} {f'pairs/s @{CONCURRENT_TASKS}':>12}")
    for f in figures:
        server = f"{f.server_us_per_pair:.1f}" if f.server_us_per_pair is not None else "n/a"
        print(f"{f.case:<31} {f.round_trips_per_pair:>10.2f} {f.round_trips_per_pair_concurrent:>9.2f} "
              f"{f.client_cpu_us_per_pair:>14.0f} {server:>10} {f.wall_us_per_pair:>8.0f} "
              f"{f.pairs_per_s_concurrent:>12.0f}")
    print(json.dumps({"bench": "host_limiter", "concurrent_tasks": CONCURRENT_TASKS, "parser": args.parser,
                      "cases": [{k: round(v, 2) if isinstance(v, float) else v for k, v in asdict(f).items()}
                                for f in figures]}))


if __name__ == "__main__":
    asyncio.run(main())
