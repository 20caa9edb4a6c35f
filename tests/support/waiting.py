"""Waiting on a condition with a deadline, never on a fixed sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def wait_until(predicate: Callable[[], Awaitable[bool]], *, timeout_s: float = 30.0,
                     interval_s: float = 0.05, what: str = "condition") -> None:
    """Polls `predicate` until it is true; fails the test with `what` after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(interval_s)


def wait_until_sync(predicate: Callable[[], bool], *, timeout_s: float = 30.0, interval_s: float = 0.05,
                    what: str = "condition") -> None:
    """`wait_until` for synchronous code (threads that use SyncMediaCache)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)
