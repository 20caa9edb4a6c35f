"""A separate worker process for the cross-process tests: acquires and releases, reporting what it got.

    python -m tests.fetching.limiter_proc loop PREFIX HOST RULE DURATION_S TASKS HOLD_MIN_S HOLD_MAX_S
    python -m tests.fetching.limiter_proc hold PREFIX HOST RULE COUNT PERMIT_TTL_S

`loop` prints `ready` once imported and connected, reads the start time (epoch seconds) from
stdin, so that all processes begin together, and prints one JSON line at the end: a list of
[granted_at_ms (Redis), started, ended (local clock)] per grant. `hold` prints a JSON line with
its grants, then sleeps until it is killed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import random
import sys
import time
import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mediacache.fetching.host_limiter import Grant, HostLimiter


def _bare_package() -> None:
    """Makes `mediacache` importable without running its __init__.py.

    The limiter needs none of the public API, whose imports (SQLAlchemy, obstore, httpx, ...) take
    seconds per process on a busy two-core machine, three processes at once.
    """
    spec = importlib.util.find_spec("mediacache")  # finds the package without executing it
    assert spec is not None and spec.submodule_search_locations is not None
    package = types.ModuleType("mediacache")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["mediacache"] = package


def _limiter(prefix: str, permit_ttl_s: float = 60.0) -> HostLimiter:
    import redis.asyncio as aioredis

    from mediacache.fetching.host_limiter import HostLimiter

    client = aioredis.Redis(host="127.0.0.1", port=6379, socket_timeout=5)
    return HostLimiter(client, prefix, permit_ttl_s=permit_ttl_s)


async def loop(prefix: str, host: str, rule_text: str, duration_s: float, tasks: int,
               hold_min_s: float, hold_max_s: float) -> None:
    from mediacache.fetching.host_limiter import Grant, Outcome
    from mediacache.fetching.host_rules import parse_rule

    limiter = _limiter(prefix)
    await limiter.client.ping()
    rule = parse_rule(rule_text)
    grants: list[list[float]] = []
    print("ready", flush=True)
    start_at = float(await asyncio.to_thread(sys.stdin.readline))
    await asyncio.sleep(max(0.0, start_at - time.time()))
    end_at = start_at + duration_s

    async def one() -> None:
        while time.time() < end_at:
            decision = await limiter.acquire(host, rule)
            if isinstance(decision, Grant):
                started = time.time()
                await asyncio.sleep(random.uniform(hold_min_s, hold_max_s))
                ended = time.time()
                await limiter.release(decision, Outcome.ok())
                grants.append([decision.granted_at_ms, started, ended])
            else:
                await asyncio.sleep(min(decision.retry_in_s, 0.2))

    await asyncio.gather(*(one() for _ in range(tasks)))
    print(json.dumps(grants), flush=True)
    await limiter.client.aclose()


async def hold(prefix: str, host: str, rule_text: str, count: int, permit_ttl_s: float) -> None:
    from mediacache.fetching.host_limiter import Grant
    from mediacache.fetching.host_rules import parse_rule

    limiter = _limiter(prefix, permit_ttl_s=permit_ttl_s)
    rule = parse_rule(rule_text)
    held: list[Grant] = []
    while len(held) < count:
        decision = await limiter.acquire(host, rule)
        if isinstance(decision, Grant):
            held.append(decision)
        else:
            await asyncio.sleep(0.01)
    print(json.dumps([[g.permit_id, g.granted_at_ms, g.expires_at_ms] for g in held]), flush=True)
    await asyncio.sleep(3600)


def main(argv: list[str]) -> None:
    _bare_package()
    mode, prefix, host, rule_text, *rest = argv
    if mode == "loop":
        duration_s, tasks, hold_min_s, hold_max_s = rest
        asyncio.run(loop(prefix, host, rule_text, float(duration_s), int(tasks),
                         float(hold_min_s), float(hold_max_s)))
    else:
        count, ttl_s = rest
        asyncio.run(hold(prefix, host, rule_text, int(count), float(ttl_s)))


if __name__ == "__main__":
    main(sys.argv[1:])
