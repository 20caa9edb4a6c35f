"""Operations endpoints: /healthz (alive), /readyz (database, Redis and storage answer), /metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from mediacache.api.auth import has_token
from mediacache.api.deps import CacheDep
from mediacache.api.metrics import render, take_snapshot
from mediacache.api.schemas import ReadyResponse

router = APIRouter(tags=["operations"])
log = logging.getLogger("mediacache.api")

READY_CHECK_TIMEOUT_S = 3.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and serving; says nothing about its dependencies (see /readyz)."""
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
async def readyz(request: Request, cache: CacheDep) -> JSONResponse:
    """200 when the database, Redis and storage all answer; 503 naming each one that does not.

    Why one does not answer (driver messages with internal hosts and ports) is shown only to
    callers with MEDIACACHE_API_TOKEN; others see "unavailable", and the log has the reason.
    """
    checks: dict[str, Callable[[], Awaitable[object]]] = {
        "database": cache.check_migrated,
        "redis": cache.ping_queue,
        "storage": cache.ping_storage,
    }
    results = await asyncio.gather(*(_probe(fn) for fn in checks.values()))
    outcome = dict(zip(checks, results, strict=True))
    ready = all(v == "ok" for v in outcome.values())
    for name, result in outcome.items():
        if result != "ok":
            log.warning("readyz: %s is not ready: %s", name, result)
    if not has_token(request):
        outcome = {name: "ok" if result == "ok" else "unavailable" for name, result in outcome.items()}
    body = ReadyResponse(status="ready" if ready else "unavailable", checks=outcome)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


async def _probe(fn: Callable[[], Awaitable[object]]) -> str:
    try:
        async with asyncio.timeout(READY_CHECK_TIMEOUT_S):
            await fn()
    except TimeoutError:
        return f"no answer within {READY_CHECK_TIMEOUT_S:g} s"
    except Exception as exc:
        # Any failure means "not ready"; the message says which dependency and why.
        return str(exc) or type(exc).__name__
    return "ok"


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
async def metrics(cache: CacheDep) -> Response:
    """Prometheus metrics: queue depths, assets by status and error kind, bytes stored, download timings."""
    return Response(render(await take_snapshot(cache)), media_type=CONTENT_TYPE_LATEST)
