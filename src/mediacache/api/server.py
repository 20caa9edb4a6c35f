"""Running the app under uvicorn inside an existing event loop (the `serve` command and the tests)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from mediacache.errors import MediaCacheError

STARTUP_TIMEOUT_S = 120.0
# In-flight requests get this long to finish at shutdown; the worker's own grace comes after.
GRACEFUL_SHUTDOWN_S = 10


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the caller decides what stops the server.

    uvicorn re-raises a caught SIGTERM after shutting down, which would end the process with
    -SIGTERM rather than exit code 0; and tests must not have their signals taken over.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        except SystemExit:
            # uvicorn exits the process when the app's start-up fails; here, serve() returns
            # instead and `serving` raises the app's own error.
            self.should_exit = True


class _QuietStartupFailure(logging.Filter):
    """Drops uvicorn's report of a start-up that failed with one of our errors.

    uvicorn logs such a failure as a full traceback (about 70 lines) and "Application startup
    failed"; `serving` raises the error itself, and the command line prints it as one line.
    """

    def __init__(self, app: FastAPI) -> None:
        super().__init__()
        self.app = app

    def filter(self, record: logging.LogRecord) -> bool:
        return not isinstance(getattr(self.app.state, "startup_error", None), MediaCacheError)


@dataclass
class RunningServer:
    server: uvicorn.Server
    task: asyncio.Task[None]
    url: str


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 picks a free port (read it back from the socket).

    Its connections send without Nagle's delay: asyncio sets TCP_NODELAY only on sockets whose
    `proto` says TCP, and `socket.create_server` leaves it 0. Without it, every request after the
    first on a keep-alive connection waited about 40 ms: uvicorn writes the head and the body of a
    response separately, and the body waited for the client's delayed ACK of the head.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        if os.name == "posix":
            # As create_server does: a restarted server can bind while old connections linger.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        # Also inherited by accepted connections on Linux, whatever the event loop does.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return sock


@contextlib.asynccontextmanager
async def serving(app: FastAPI, sock: socket.socket, *, log_level: str = "warning",
                  access_log: bool = False) -> AsyncIterator[RunningServer]:
    """Serves `app` on `sock` until the block ends; raises the app's start-up error if it fails."""
    config = uvicorn.Config(app, lifespan="on", log_level=log_level, access_log=access_log,
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, server_header=False)
    server = _Server(config)
    quiet = _QuietStartupFailure(app)
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addFilter(quiet)
    try:
        task = asyncio.create_task(server.serve(sockets=[sock]), name="uvicorn")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTUP_TIMEOUT_S
        while not server.started:
            if task.done() or loop.time() > deadline:
                server.should_exit = True
                await task
                sock.close()
                error = getattr(app.state, "startup_error", None)
                if isinstance(error, MediaCacheError):
                    raise error
                raise RuntimeError(f"the HTTP server did not start: {error!r}")
            await asyncio.sleep(0.02)
    finally:
        uvicorn_log.removeFilter(quiet)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    try:
        yield RunningServer(server=server, task=task, url=f"http://{shown}:{port}")
    finally:
        server.should_exit = True
        await task
