"""The JSON API under /api: queue, look up, resolve, statistics and maintenance; thin calls to MediaCache."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from fastapi import APIRouter

from mediacache.api.deps import READ, WRITE, CacheDep
from mediacache.api.errors import ApiError
from mediacache.api.schemas import (
    AssetResponse,
    CacheStatsBody,
    CleanupRequest,
    CleanupResponse,
    ErrorResponse,
    QueueBatchRequest,
    QueuedBatchResponse,
    QueuedResponse,
    QueueRequest,
    QueueStatsBody,
    ResolveRequest,
    ResolveResponse,
    RetriedResponse,
    StatsResponse,
    UsageResponse,
)
from mediacache.domain import CacheStatus

router = APIRouter(prefix="/api", tags=["assets"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 422, 503)}


@router.post("/assets", status_code=202, response_model=QueuedResponse, dependencies=WRITE, responses=_ERRORS)
async def queue_one(body: QueueRequest, cache: CacheDep) -> QueuedResponse:
    """Queues one media URL; answers at once with the new asset's id (PENDING)."""
    asset_id = await cache.cache_image(body.url)
    return QueuedResponse(id=asset_id, status=CacheStatus.PENDING)


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


@router.get("/assets/{asset_id}", response_model=AssetResponse, dependencies=READ,
            responses={**_ERRORS, 404: {"model": ErrorResponse}})
async def get_asset(asset_id: uuid.UUID, cache: CacheDep) -> AssetResponse:
    """The asset's record, with the URL to show for it now."""
    rec = await cache.get_asset(asset_id)
    if rec is None:
        raise ApiError(404, "not_found", f"no asset with id {asset_id}")
    url = await cache.get_url(asset_id, rec.original_url)
    return AssetResponse(url=url, **rec.as_dict())


@router.post("/urls", response_model=ResolveResponse, dependencies=READ, responses=_ERRORS)
async def resolve(body: ResolveRequest, cache: CacheDep) -> ResolveResponse:
    """Resolves asset ids (or legacy storage keys) to URLs in one query; null where nothing is known.

    A read, though it is a POST: the lists can be too long for a query string.
    """
    return ResolveResponse(urls=await cache.get_urls(body.values, body.original_urls))


@router.get("/stats", response_model=StatsResponse, dependencies=READ, responses=_ERRORS)
async def stats(cache: CacheDep) -> StatsResponse:
    """Queue counts (BullMQ) and asset counts by status and by error kind (database)."""
    queue = await cache.queue_stats()
    assets = await cache.cache_stats()
    return StatsResponse(queue=QueueStatsBody(**queue.as_dict()), cache=CacheStatsBody(**assets.as_dict()))
