"""Helpers of the HTTP service tests: a real uvicorn server on 127.0.0.1, in the test's loop or a thread."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from mediacache.api import create_app
from mediacache.api.server import bind, serving
from mediacache.domain import CacheStatus
from mediacache.service import MediaCache
from mediacache.settings import Settings
from tests.support.services import SettingsFactory
from tests.support.waiting import wait_until

# Quick shutdowns: a test's server stops at its end, and no job should be in flight by then.
FAST = {"shutdown_grace_s": 5.0}


@dataclass
class Api:
    url: str
    client: httpx.AsyncClient
    cache: MediaCache  # the test's own handle on the same database and queue, for assertions
    settings: Settings

    async def wait_settled(self, ids: list[str], *, timeout_s: float = 30.0) -> None:
        async def settled() -> bool:
            for asset_id in ids:
                rec = await self.cache.get_asset(asset_id)
                if rec is None or rec.status not in (CacheStatus.CACHED, CacheStatus.FAILED):
                    return False
            return True
        await wait_until(settled, timeout_s=timeout_s, what=f"{len(ids)} assets to settle")


@asynccontextmanager
async def running_api(make_settings: SettingsFactory, *, run_worker: bool = True,
                      **overrides: Any) -> AsyncIterator[Api]:
    """Serves the app on a free port of 127.0.0.1 in this event loop, with links pointing at it."""
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    settings = make_settings(public_base_url=f"http://127.0.0.1:{port}", **{**FAST, **overrides})
    app = create_app(settings, run_worker=run_worker)
    async with serving(app, sock) as running, MediaCache(settings) as cache, \
            httpx.AsyncClient(base_url=running.url, timeout=30) as client:
        yield Api(url=running.url, client=client, cache=cache, settings=settings)


@contextmanager
def api_in_thread(make_settings: SettingsFactory, *, run_worker: bool = False,
                  **overrides: Any) -> Iterator[str]:
    """The same server in a thread of its own, for synchronous tests (hypothesis); yields its URL."""
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    settings = make_settings(public_base_url=f"http://127.0.0.1:{port}", **{**FAST, **overrides})
    ready = threading.Event()
    failure: list[BaseException] = []
    loop_and_stop: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def main() -> None:
        stop = asyncio.Event()
        loop_and_stop.append((asyncio.get_running_loop(), stop))
        async with serving(create_app(settings, run_worker=run_worker), sock):
            ready.set()
            await stop.wait()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="api-under-test", daemon=True)
    thread.start()
    try:
        if not ready.wait(60) or failure:
            raise RuntimeError(f"the API server did not start: {failure!r}")
        yield f"http://127.0.0.1:{port}"
    finally:
        for loop, stop in loop_and_stop:
            loop.call_soon_threadsafe(stop.set)
        thread.join(30)


async def raw_request(url: str, target: str, *, method: str = "GET", headers: dict[str, str] | None = None,
                      body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request with `target` sent byte for byte (httpx would normalise `..` and escapes)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        headers = {"Content-Length": str(len(body)), **(headers or {})}
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, payload


def new_id() -> str:
    return str(uuid.uuid4())
