"""A real webhook receiver on 127.0.0.1 for tests: it can be down, answer errors, keep connections
alive, and it logs what came and counts the connections open to it."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from tests.support.ports import free_port

# How long stopping waits for the connection handlers it cancelled: bounded, so a client that keeps a
# connection open (or a handler stuck on one) cannot hold up a test's teardown.
STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered
    at: float  # time.time() on arrival


@dataclass
class Receiver:
    """POST anywhere: the first `fail_first` requests get 500, later ones 200. Not listening until
    `start()` (so a test can have it down), and again after `stop()`, which closes every connection;
    the port stays the same. With `keep_alive` a connection serves any number of requests, as most
    receivers do; without, each answer says `Connection: close`."""

    fail_first: int = 0
    keep_alive: bool = False
    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    connections_accepted: int = 0
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.AbstractServer | None = None
    _thread: threading.Thread | None = None

    @property
    def open_connections(self) -> int:
        """Connections open to the receiver now (a handler ends when its client closes)."""
        return len(self._handlers)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/media"

    def accepted(self) -> list[Received]:
        return [r for r in list(self.received) if r.status == 200]

    def start(self) -> Receiver:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", self.port, backlog=1024))
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=run, name="test-webhook-receiver", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("webhook receiver did not start")
        return self

    def start_after(self, delay_s: float) -> threading.Timer:
        timer = threading.Timer(delay_s, self.start)
        timer.daemon = True
        timer.start()
        return timer

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        async def shutdown() -> None:
            server.close()
            # Idle kept-alive clients would never close by themselves (and on Python 3.12+
            # wait_closed waits for every connection): cut them off, and wait a bounded time.
            handlers = set(self._handlers)
            for task in handlers:
                task.cancel()
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await asyncio.gather(*handlers, return_exceptions=True)
                await server.wait_closed()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(STOP_TIMEOUT_S + 5)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(10)
            self._loop = self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections_accepted += 1
        try:
            while await self._answer_one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._handlers.discard(task)

    async def _answer_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Reads one request and answers it; whether the connection stays open for another."""
        if not await reader.readline():  # the request line, or the client closed
            return False
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        status = 500 if len(self.received) < self.fail_first else 200
        self.received.append(Received(headers, body, status, time.time()))
        closing = "" if self.keep_alive else "Connection: close\r\n"
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n{closing}\r\n".encode())
        await writer.drain()
        return self.keep_alive
