"""The FastAPI application factory: one MediaCache (and optionally a worker) for the app's lifetime."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mediacache import __version__
from mediacache.api import (
    routes_apptables,
    routes_assets,
    routes_dashboard,
    routes_events,
    routes_files,
    routes_ops,
)
from mediacache.api.auth import AuthGate, access_of
from mediacache.api.errors import error_response, install_error_handlers
from mediacache.service import MediaCache
from mediacache.settings import Settings
from mediacache.storage.signing import load_signing_key

log = logging.getLogger("mediacache.api")

# The largest request body: a batch of 1000 URLs of a few hundred characters fits many times over.
MAX_BODY_BYTES = 4 * 1024 * 1024


def create_app(settings: Settings, *, run_worker: bool = True, run_derive: bool = False,
               exposed: bool = False) -> FastAPI:
    """The HTTP service. With `run_worker`, a CacheWorker runs in the same process and event loop;
    with `run_derive` too (and MEDIACACHE_DERIVE on), a DeriveWorker beside it.

    `exposed` says the server listens beyond loopback: reads then need the token too, unless
    MEDIACACHE_API_TOKEN_READS says otherwise.

    Start-up fails (with the MediaCacheError that says what to do) when the database is not
    migrated or, with a worker, when Redis or the store cannot be used.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cache = MediaCache(settings)
        worker = None
        deriver = None
        try:
            await cache.check_migrated()
            await cache.check_storage_placement()
            if run_worker:
                from mediacache.worker import CacheWorker

                worker = CacheWorker(cache)
                await worker.start()
            if run_worker and run_derive and settings.derive_enabled:
                from mediacache.media.worker import DeriveWorker

                deriver = DeriveWorker(cache)
                await deriver.start()
            app.state.cache = cache
            # Start-up objects live as long as the process; frozen, full garbage collections
            # stop walking them (each walk stalled requests for about 35 ms).
            gc.freeze()
            yield
        except BaseException as exc:
            # Kept for whoever runs the server: uvicorn only logs a failed start-up.
            app.state.startup_error = exc
            raise
        finally:
            if deriver is not None:
                await deriver.stop()
            if worker is not None:
                await worker.stop()
            await cache.close()

    app = FastAPI(
        title="mediacache", version=__version__, lifespan=lifespan,
        summary="Background media cache: remote URLs in, durable copies in object storage out.",
    )
    app.state.settings = settings
    app.state.exposed = exposed
    app.state.startup_error = None
    # Read once: with no MEDIACACHE_SIGNING_SECRET the key lives in a file of the data directory.
    app.state.signing_key = (load_signing_key(settings.signing_secret, settings.data_dir)
                             if settings.storage_backend == "local" else b"")
    install_error_handlers(app)
    routers = (routes_assets, routes_events, routes_apptables, routes_files, routes_ops, routes_dashboard)
    for module in routers:
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=routes_dashboard.STATIC_DIR), name="static")
    app.add_middleware(BodyLimit, timeout_s=settings.request_body_timeout_s)
    # Added last, so it runs first: the token is checked before any body is read.
    gated = [(route, access_of(route, module.router.dependencies)) for module in routers
             for route in module.router.routes]
    app.add_middleware(AuthGate, routes=gated)
    return app


class BodyLimit:
    """Refuses request bodies over MAX_BODY_BYTES with 413, counting streamed bytes too (a client
    may send no Content-Length), so no request can make the server buffer without bound; and
    answers 408 to a body not received within `timeout_s` (MEDIACACHE_REQUEST_BODY_TIMEOUT_S),
    so a client that sends part of a body and stalls cannot hold a connection forever."""

    def __init__(self, app: ASGIApp, *, timeout_s: float = 30.0) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            await error_response(413, "body_too_large", _TOO_LARGE)(scope, receive, send)
            return
        received = 0
        body_done = False
        deadline = asyncio.get_running_loop().time() + self.timeout_s

        async def limited() -> Message:
            nonlocal received, body_done
            if body_done:
                # After the body, receive() waits for the client to disconnect (a streaming
                # response listens for it for as long as it streams): no deadline there.
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                # An HTTPException, so that FastAPI's body parsing passes it on unchanged.
                raise StarletteHTTPException(408, _TOO_SLOW, headers={"Connection": "close"}) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    raise StarletteHTTPException(413, _TOO_LARGE)
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        await self.app(scope, limited, send)


_TOO_SLOW = ("the request body did not arrive in time (MEDIACACHE_REQUEST_BODY_TIMEOUT_S); send the whole "
             "body at once")
_TOO_LARGE = f"the request body is over {MAX_BODY_BYTES} bytes; send large batches as several requests"
