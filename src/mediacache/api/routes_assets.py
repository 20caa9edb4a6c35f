"""The JSON API under /api: queue, look up, resolve, statistics and maintenance; thin calls to MediaCache."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query

from mediacache.api.deps import READ, WRITE, CacheDep
from mediacache.api.errors import ApiError
from mediacache.api.schemas import (
    AssetResponse,
    CacheStatsBody,
    CleanupRequest,
    CleanupResponse,
    ErrorResponse,
    HostStateBody,
    QueueBatchRequest,
    QueuedBatchResponse,
    QueuedResponse,
    QueueRequest,
    QueueStatsBody,
    ResolveRequest,
    ResolveResponse,
    RetriedResponse,
    SourceRequest,
    StatsResponse,
    UsageResponse,
)
from mediacache.domain import CacheStatus

router = APIRouter(prefix="/api", tags=["assets"])

# Longer holds would outlast common proxy and load-balancer idle time-outs (often 30 to 60 s).
MAX_WAIT_S = 30

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 408, 413, 422, 503)}


@router.post("/assets", status_code=202, response_model=QueuedResponse, dependencies=WRITE, responses=_ERRORS)
async def queue_one(body: QueueRequest, cache: CacheDep) -> QueuedResponse:
    """Queues one media URL; answers at once with the asset's id and its status: PENDING for a new
    asset, or that of the live asset a deduplicated URL already has (CACHED when it is stored)."""
    asset_id = await cache.cache_image(body.url)
    rec = await cache.get_asset(asset_id)
    # None only when a cleanup removed the asset between the two calls: the id then resolves to the
    # original URL, as any removed asset's does.
    return QueuedResponse(id=asset_id, status=rec.status if rec is not None else CacheStatus.PENDING)


@router.post("/assets/batch", status_code=202, response_model=QueuedBatchResponse, dependencies=WRITE,
             responses=_ERRORS)
async def queue_batch(body: QueueBatchRequest, cache: CacheDep) -> QueuedBatchResponse:
    """Queues up to 1000 URLs in one transaction; ids in input order. One bad URL refuses the batch."""
    return QueuedBatchResponse(ids=await cache.cache_images(body.urls))


@router.post("/assets/retry-failed", response_model=RetriedResponse, dependencies=WRITE, responses=_ERRORS)
async def retry_failed(cache: CacheDep) -> RetriedResponse:
    """Puts every FAILED asset back to PENDING with a fresh job; returns how many."""
    return RetriedResponse(retried=await cache.retry_failed())


@router.post("/assets/cleanup", response_model=CleanupResponse, dependencies=WRITE, responses=_ERRORS)
async def cleanup(body: CleanupRequest, cache: CacheDep) -> CleanupResponse:
    """Deletes CACHED and FAILED assets older than `days` days, with their stored objects; assets that
    application rows reference are kept unless `include_referenced`."""
    return CleanupResponse(removed=await cache.cleanup(body.days, include_referenced=body.include_referenced))


@router.get("/usage", response_model=UsageResponse, dependencies=READ, responses=_ERRORS)
async def usage(cache: CacheDep, check_bucket: bool = False) -> UsageResponse:
    """Assets and bytes by status, content type, source host and age, and what deduplication saved;
    with `check_bucket=true` the store is listed too (slow on big buckets)."""
    return UsageResponse.model_validate(dataclasses.asdict(await cache.usage(check_bucket=check_bucket)))


# `:uuid` so that GET /api/assets/batch (and the other POST-only paths) match no GET route and
# answer 405, instead of failing this route's id validation with a 422.
@router.get("/assets/{asset_id:uuid}", response_model=AssetResponse, dependencies=READ,
            responses={**_ERRORS, 404: {"model": ErrorResponse}})
async def get_asset(asset_id: uuid.UUID, cache: CacheDep,
                    wait_s: Annotated[float | None, Query(gt=0, le=MAX_WAIT_S)] = None) -> AssetResponse:
    """The asset's record, with the URL to show for it now. With `wait_s` (at most 30), the answer
    comes as soon as the asset is CACHED or FAILED, or after `wait_s` seconds with its status then."""
    rec = await cache.get_asset(asset_id)
    if rec is not None and wait_s is not None and rec.status not in (CacheStatus.CACHED, CacheStatus.FAILED):
        rec = (await cache.wait([asset_id], timeout_s=wait_s)).records[0]
    if rec is None:
        raise ApiError(404, "not_found", f"no asset with id {asset_id}")
    url = await cache.get_url(asset_id, rec.original_url)
    return AssetResponse(url=url, **rec.as_dict())


@router.post("/urls", response_model=ResolveResponse, dependencies=READ, responses=_ERRORS)
async def resolve(body: ResolveRequest, cache: CacheDep) -> ResolveResponse:
    """Resolves asset ids (or legacy storage keys) to URLs in one query; null where nothing is known.

    A read, though it is a POST: the lists can be too long for a query string. A legacy key is
    signed only when an object is stored under it (one HEAD per distinct key), so a caller cannot
    get a working link for any name it makes up.
    """
    return ResolveResponse(urls=await cache.get_urls(body.values, body.original_urls, legacy_must_exist=True))


@router.get("/stats", response_model=StatsResponse, dependencies=READ, responses=_ERRORS)
async def stats(cache: CacheDep) -> StatsResponse:
    """Queue counts (BullMQ), asset counts by status and by error kind (database), and the per-host
    limiter's view of the most recently used hosts (breaker, rate, permits in use)."""
    # Redis and the database answer independently: asking them together halves the wait.
    queue, assets, states = await asyncio.gather(cache.queue_stats(), cache.cache_stats(), cache.host_states())
    hosts = [HostStateBody.model_validate(h, from_attributes=True) for h in states]
    return StatsResponse(queue=QueueStatsBody(**queue.as_dict()), cache=CacheStatsBody(**assets.as_dict()),
                         hosts=hosts)


@router.put("/assets/{asset_id:uuid}/source", response_model=AssetResponse, dependencies=WRITE,
            responses={**_ERRORS, 404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}})
async def refresh_source(asset_id: uuid.UUID, body: SourceRequest, cache: CacheDep) -> AssetResponse:
    """Gives an asset that is not CACHED a new source URL (a freshly signed link for the same media)
    and queues it again under the same id: 404 for an unknown id, 409 for a CACHED asset."""
    rec = await cache.refresh_source(asset_id, str(body.url))
    return AssetResponse(url=rec.original_url, **rec.as_dict())
