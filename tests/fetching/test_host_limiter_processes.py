"""The host limiter across separate worker processes: the rate and the concurrency hold in total, and
the permits of a SIGKILLed process come back within the permit TTL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from mediacache.fetching.host_limiter import Grant, Wait
from mediacache.fetching.host_rules import parse_rule
from tests.fetching.conftest import LimiterFactory, eventually

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fetching.limiter_proc", *args, cwd=ROOT, env=_env(),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def _run_loops(prefix: str, host: str, rule: str, *, processes: int, duration_s: float, tasks: int,
                     hold_s: tuple[float, float]) -> list[list[list[float]]]:
    procs = [await _spawn("loop", prefix, host, rule, str(duration_s), str(tasks), str(hold_s[0]), str(hold_s[1]))
             for _ in range(processes)]
    # Imports take a second or more on a busy machine: all start together once all are ready.
    for proc in procs:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), timeout=20)).strip() == b"ready"
    start_at = f"{time.time() + 0.1}\n".encode()
    outputs = await asyncio.wait_for(asyncio.gather(*(proc.communicate(start_at) for proc in procs)),
                                     timeout=duration_s + 10)
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
    return [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outputs]


async def test_the_rate_holds_across_three_processes(key_prefix: str) -> None:
    rule = parse_rule("rate.test=20/s:unlimited")
    per_process = await _run_loops(key_prefix, "rate.test", str(rule), processes=3, duration_s=3.0, tasks=2,
                                   hold_s=(0.0, 0.005))
    granted_ms = sorted(g[0] for grants in per_process for g in grants)
    assert all(per_process), "every process got grants"
    # Redis's clock stamps every grant; a window starting at each grant counts the worst case.
    worst = max(sum(1 for t in granted_ms[i:] if t < start + 1000) for i, start in enumerate(granted_ms))
    print(f"rate 20/s, 3 processes x 2 tasks, 3 s: {len(granted_ms)} grants, at most {worst} in any 1 s")
    # GCRA allows rate + burst - 1 in any one-second window (burst: 2 at 20/s).
    assert worst <= 20 + rule.burst - 1, f"{worst} grants in one second"
    # And it is not starved: 62 at most; a loaded machine wakes waiters late and wastes slots.
    assert len(granted_ms) >= 30, len(granted_ms)


async def test_the_concurrency_holds_across_three_processes(key_prefix: str) -> None:
    per_process = await _run_loops(key_prefix, "conc.test", "conc.test=unlimited:4", processes=3, duration_s=2.0,
                                   tasks=3, hold_s=(0.02, 0.06))
    # Each process's [started, ended] lies inside the time its permit was held in Redis, so the
    # overlap measured here is at most the true one.
    edges = sorted((t, step) for grants in per_process for _, started, ended in grants
                   for t, step in ((started, 1), (ended, -1)))
    in_flight = most = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        in_flight += step
        most = max(most, in_flight)
    print(f"concurrency 4, 3 processes x 3 tasks, 2 s: {sum(len(g) for g in per_process)} grants, "
          f"at most {most} at once")
    assert most <= 4
    assert most >= 3, "nine contenders keep the four permits in use"
    assert sum(len(g) for g in per_process) >= 30


async def test_the_permits_of_a_killed_process_come_back_within_the_ttl(
        key_prefix: str, make_limiter: LimiterFactory) -> None:
    ttl_s = 1.0
    proc = await _spawn("hold", key_prefix, "kill.test", "kill.test=unlimited:2", "2", str(ttl_s))
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=10)
        held: list[list[Any]] = json.loads(line)
        limiter = make_limiter(permit_ttl_s=ttl_s)
        rule = parse_rule("kill.test=unlimited:2")
        first = await limiter.acquire("kill.test", rule)
        assert isinstance(first, Wait) and first.reason == "concurrency"
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()

    async def granted() -> Grant | None:
        decision = await limiter.acquire("kill.test", rule)
        return decision if isinstance(decision, Grant) else None

    grant = await eventually(granted, timeout_s=ttl_s + 2, interval_s=0.02)
    expiries_ms = sorted(expires for _, _, expires in held)
    # Not before the dead process's permit lapsed (nothing released it), and soon after.
    assert grant.granted_at_ms >= expiries_ms[0]
    assert grant.granted_at_ms <= expiries_ms[0] + 500

    async def second() -> Grant | None:
        decision = await limiter.acquire("kill.test", rule)
        return decision if isinstance(decision, Grant) else None

    assert (await eventually(second, timeout_s=1.0)).granted_at_ms <= expiries_ms[1] + 500
    assert isinstance(await limiter.acquire("kill.test", rule), Wait), "two permits, both ours now"
