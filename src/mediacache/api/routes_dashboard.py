"""The dashboard at `/` (server-rendered, refreshed by a small script) and its data, GET /api/dashboard."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from mediacache.api.auth import has_token, reads_protected
from mediacache.api.deps import READ, CacheDep
from mediacache.api.schemas import (
    CacheStatsBody,
    DashboardResponse,
    ErrorResponse,
    FailureBody,
    HostStateBody,
    QueueStatsBody,
    WebhookStatsBody,
)
from mediacache.domain import human_bytes
from mediacache.errors import QueueUnavailableError
from mediacache.service import MediaCache
from mediacache.settings import Settings

router = APIRouter(tags=["dashboard"])
log = logging.getLogger("mediacache.api")

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
THROUGHPUT_WINDOW_S = 600
THROUGHPUT_BUCKET_S = 10
FAILURES_SHOWN = 20
HOSTS_SHOWN = 10
POLL_INTERVAL_MS = 2000
# While the page hears /api/events, polling is only the fallback that catches what a stream missed.
STREAM_POLL_INTERVAL_MS = 15000

# Autoescaping matters: failure messages and URLs come from remote servers and callers.
_env = Environment(loader=FileSystemLoader(TEMPLATES_DIR), autoescape=select_autoescape(["html"]),
                   trim_blocks=True, lstrip_blocks=True)
# No inline script or style: the page's own static files only, and no framing (clickjacking on
# the retry button).
DASHBOARD_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                 "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


_env.filters["human_bytes"] = human_bytes


async def dashboard_data(cache: MediaCache, *, details: bool) -> DashboardResponse:
    """The dashboard's figures; `details` (for callers with the token) keeps Redis's error text."""
    async def queue() -> tuple[QueueStatsBody | None, str | None]:
        try:
            return QueueStatsBody(**(await cache.queue_stats()).as_dict()), None
        except QueueUnavailableError as exc:
            # The database figures are still worth showing while Redis is away. The error names
            # internal hosts and ports: anonymous callers see only that the queue is away.
            log.warning("dashboard: the queue does not answer: %s", exc)
            return None, str(exc) if details else "unavailable"

    async def webhooks() -> WebhookStatsBody | None:
        if not cache.settings.webhook_url_list:
            return None
        return WebhookStatsBody(**(await cache.webhook_stats()).as_dict())

    async def hosts() -> list[HostStateBody]:
        try:
            return [HostStateBody.model_validate(h, from_attributes=True) for h in await cache.host_states(HOSTS_SHOWN)]
        except QueueUnavailableError:
            return []

    hooks_task = asyncio.ensure_future(webhooks())
    hosts_task = asyncio.ensure_future(hosts())
    (queue_stats, queue_error), stats, stored, (avoided, not_stored), failures, throughput = await asyncio.gather(
        queue(), cache.cache_stats(), cache.stored_bytes(), cache.dedup_savings(),
        cache.recent_failures(FAILURES_SHOWN), cache.throughput(THROUGHPUT_WINDOW_S, THROUGHPUT_BUCKET_S))
    hooks = await hooks_task
    host_rows = await hosts_task
    return DashboardResponse(
        queue=queue_stats, queue_error=queue_error, cache=CacheStatsBody(**stats.as_dict()), stored_bytes=stored,
        downloads_avoided=avoided, bytes_not_stored=not_stored,
        failures=[FailureBody(id=f.id, original_url=f.original_url, error_kind=f.error_kind, error=f.error,
                              attempts=f.attempts, failed_at=f.updated_at) for f in failures],
        throughput_bucket_s=THROUGHPUT_BUCKET_S, throughput=throughput, webhooks=hooks, hosts=host_rows)


@router.get("/api/dashboard", response_model=DashboardResponse, dependencies=READ,
            responses={code: {"model": ErrorResponse} for code in (401, 403)})
async def dashboard_json(request: Request, cache: CacheDep) -> DashboardResponse:
    """Everything the dashboard shows, in one request (read again by the page on each /api/events
    event, and polled every 2 s when the stream is not available)."""
    return await dashboard_data(cache, details=has_token(request))


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def dashboard(request: Request, cache: CacheDep) -> HTMLResponse:
    settings: Settings = request.app.state.settings
    token_set = settings.api_token is not None
    # With protected reads the page itself shows no figures: the script fetches them with the token.
    protected = token_set and reads_protected(request.app.state)
    data = None if protected else await dashboard_data(cache, details=has_token(request))
    html = _env.get_template("dashboard.html").render(
        data=data, data_json=data.model_dump(mode="json") if data else None, token_required=token_set,
        poll_interval_ms=POLL_INTERVAL_MS, stream_poll_interval_ms=STREAM_POLL_INTERVAL_MS,
        window_min=THROUGHPUT_WINDOW_S // 60)
    return HTMLResponse(html, headers={"Content-Security-Policy": DASHBOARD_CSP, "Cache-Control": "no-store",
                                       "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})
