"""Test support for the interop tests: Node BullMQ runs, deadlines, and a stand-in for the asset table."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NODE_TOOL = HERE / "node" / "bullmq_tool.mjs"
QUEUE = "media-cache"
JOB_NAME = "cache-media"
# As the project passes it: a dict with no socket time-out (DESIGN.md: redis-py 8's default 5 s
# time-out fights BullMQ's blocking waits).
REDIS = {"host": "127.0.0.1", "port": 6379, "db": 0, "socket_timeout": None}


async def run_node(prefix: str, command: str, timeout_s: float = 20, **request: Any) -> Any:
    """Runs one command of node/bullmq_tool.mjs against `prefix` and returns its JSON answer."""
    body = json.dumps({"redis": {"host": REDIS["host"], "port": REDIS["port"], "db": REDIS["db"]},
                       "prefix": prefix, "queue": QUEUE, "command": command, **request})
    proc = await asyncio.create_subprocess_exec("node", str(NODE_TOOL), body, cwd=HERE,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"node {command} did not finish within {timeout_s} s") from None
    if proc.returncode != 0:
        raise AssertionError(f"node {command} exited {proc.returncode}: {err.decode()}")
    return json.loads(out)


async def wait_until(check: Callable[[], Awaitable[Any]], timeout_s: float = 15, what: str = "condition",
                     interval_s: float = 0.05) -> Any:
    """Polls `check` until it returns something truthy; fails after `timeout_s` naming `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last: {value!r})")
        await asyncio.sleep(interval_s)


def job_view(job: Any) -> dict[str, Any]:
    """The fields of a bullmq Job that a processor can look at, as plain values."""
    return {"attemptsMade": job.attemptsMade, "attemptsStarted": job.attemptsStarted,
            "stalledCounter": job.stalledCounter, "failedReason": job.failedReason,
            "finishedOn": job.finishedOn, "processedOn": job.processedOn, "timestamp": job.timestamp,
            "stacktrace": list(job.stacktrace), "opts": dict(job.opts), "data": dict(job.data)}


class AssetTable:
    """A stand-in for `cache_assets` kept in a Redis hash under the test's prefix, so a worker in
    another process (one that is SIGKILLed) shares it. Status, attempts and the time of the last
    change, with the transitions the repository allows. One writer at a time in these tests; the
    real repository makes each transition one conditional UPDATE."""

    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def _key(self, asset_id: str) -> str:
        return f"{self.prefix}:test-assets:{asset_id}"

    async def insert(self, asset_id: str, url: str) -> None:
        await self.redis.hset(self._key(asset_id), mapping={"status": "PENDING", "attempts": 0, "url": url,
                                                            "updated_at_ms": _now_ms()})

    async def get(self, asset_id: str) -> dict[str, Any]:
        row = await self.redis.hgetall(self._key(asset_id))
        return {"status": row["status"], "attempts": int(row["attempts"]), "updated_at_ms": int(row["updated_at_ms"]),
                **({"error": row["error"]} if "error" in row else {})}

    async def _move(self, asset_id: str, allowed: set[str], target: str, **fields: Any) -> bool:
        if (await self.get(asset_id))["status"] not in allowed:
            return False
        await self.redis.hset(self._key(asset_id), mapping={"status": target, "updated_at_ms": _now_ms(), **fields})
        return True

    async def claim(self, asset_id: str) -> int | None:
        """PENDING (or DOWNLOADING, the lease left out) -> DOWNLOADING; the attempt's number."""
        if not await self._move(asset_id, {"PENDING", "DOWNLOADING"}, "DOWNLOADING"):
            return None
        return int(await self.redis.hincrby(self._key(asset_id), "attempts", 1))

    async def record_failure(self, asset_id: str, error: str, *, final: bool) -> None:
        await self._move(asset_id, {"DOWNLOADING"}, "FAILED" if final else "DOWNLOADING", error=error)

    async def mark_cached(self, asset_id: str) -> bool:
        return await self._move(asset_id, {"DOWNLOADING"}, "CACHED")

    async def reopen_failed(self, asset_id: str) -> bool:
        """FAILED -> PENDING: the transition the proposal adds to the repository for one asset."""
        return await self._move(asset_id, {"FAILED"}, "PENDING")


def _now_ms() -> int:
    return int(time.time() * 1000)
