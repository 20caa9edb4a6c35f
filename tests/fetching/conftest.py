"""Fixtures of the fetching tests: a private Redis key prefix per test, and limiters that close their clients."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Protocol

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from mediacache.fetching.host_limiter import HostLimiter

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


class LimiterFactory(Protocol):
    def __call__(self, *, port: int = REDIS_PORT, socket_timeout: float | None = 5.0, quick_retry: bool = True,
                 key_prefix: str | None = None, **opts: Any) -> HostLimiter: ...


@pytest.fixture
async def key_prefix() -> AsyncIterator[str]:
    """A key prefix no other test uses; every key under it is deleted afterwards."""
    prefix = f"mctest-hl-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=5)
    try:
        keys = [key async for key in client.scan_iter(f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def make_limiter(key_prefix: str) -> AsyncIterator[LimiterFactory]:
    """Builds limiters on the test's `key_prefix` (or a prefix under it), each with its own client,
    as separate workers have.

    `quick_retry`: one immediate retry, as the project's own clients do (queue.py), rather than
    redis-py's default of three retries with backoff.
    """
    clients: list[aioredis.Redis] = []
    test_prefix = key_prefix

    def make(*, port: int = REDIS_PORT, socket_timeout: float | None = 5.0, quick_retry: bool = True,
             key_prefix: str | None = None, **opts: Any) -> HostLimiter:
        client = aioredis.Redis(host=REDIS_HOST, port=port, socket_timeout=socket_timeout,
                                socket_connect_timeout=2)
        if quick_retry:
            client.set_retry(Retry(NoBackoff(), 1))
        clients.append(client)
        return HostLimiter(client, key_prefix or test_prefix, **opts)

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def closed_port() -> int:
    """A local port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A local port that accepts connections and never answers (a hung Redis)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


async def eventually(check: Callable[[], Awaitable[Any]], *, timeout_s: float, interval_s: float = 0.02) -> Any:
    """Calls `check` until it returns something truthy; fails after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s (last: {result!r})")
        await asyncio.sleep(interval_s)
