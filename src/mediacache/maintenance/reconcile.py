"""Reconciliation: the database is the truth, so assets whose job was lost are queued again."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from mediacache.broker.jobs import JobQueue
from mediacache.db.columns import utcnow
from mediacache.db.repository import AssetRepository
from mediacache.records import ReconcileReport
from mediacache.storage.base import ObjectStore

log = logging.getLogger("mediacache.maintenance.reconcile")

_PAGE = 500
# A PENDING asset is written a moment before its job is added (cache_images, retry_failed): one
# without a job for longer than this lost it, whatever `min_age_s` says.
PENDING_GRACE_S = 5.0


async def requeue_lost(assets: AssetRepository, queue: JobQueue, *, min_age_s: float = 60.0,
                       limit: int = 10_000) -> int:
    """Queues again every PENDING or DOWNLOADING asset whose job is gone or finished.

    Such assets appear when Redis restarts without persistence, is flushed, evicts keys, when a
    job ended while the database could not record it, or when another deployment's worker took
    the job. DOWNLOADING assets are looked at once untouched for `min_age_s` and held by no live
    lease, so work in flight is never doubled; PENDING ones (nothing works on them) once untouched
    for PENDING_GRACE_S.
    """
    now = utcnow()
    cutoff = now - timedelta(seconds=min_age_s)
    pending_cutoff = max(cutoff, now - timedelta(seconds=PENDING_GRACE_S))
    candidates = await assets.upkeep.stale_unsettled(cutoff, limit, pending_cutoff=pending_cutoff)
    requeued = 0
    for start in range(0, len(candidates), _PAGE):
        page = candidates[start:start + _PAGE]
        states = await queue.job_states([asset_id for asset_id, _ in page])
        lost = [(asset_id, url) for asset_id, url in page if states[asset_id] != "live"]
        if lost:
            await queue.requeue(lost)
            await assets.upkeep.touch([asset_id for asset_id, _ in lost])
            requeued += len(lost)
    if requeued:
        log.warning("queued %d assets again whose jobs were lost", requeued)
    return requeued


async def find_missing_objects(assets: AssetRepository, store: ObjectStore) -> list[tuple[uuid.UUID, str]]:
    """CACHED assets whose stored object is gone: (id, key), a page of assets at a time."""
    missing: list[tuple[uuid.UUID, str]] = []
    after: uuid.UUID | None = None
    while page := await assets.upkeep.cached_page(after, _PAGE):
        # Assets sharing one object (content deduplication) cost one look-up per page.
        by_key: dict[str, list[uuid.UUID]] = {}
        for asset_id, key in page:
            if key:
                by_key.setdefault(key, []).append(asset_id)
        for key in await store.missing_keys(by_key):
            missing.extend((asset_id, key) for asset_id in by_key[key])
        after = page[-1][0]
    return missing


async def reconcile(assets: AssetRepository, store: ObjectStore, queue: JobQueue, *, min_age_s: float = 60.0,
                    check_objects: bool = False,
                    requeue_missing: bool = False) -> ReconcileReport:
    requeued = await requeue_lost(assets, queue, min_age_s=min_age_s)
    missing: list[tuple[uuid.UUID, str]] = []
    requeued_missing = 0
    if check_objects or requeue_missing:
        missing = await find_missing_objects(assets, store)
        for asset_id, key in missing:
            log.warning("asset %s is CACHED but its object %s is missing", asset_id, key)
        if requeue_missing and missing:
            moved = await assets.upkeep.uncache([i for i, _ in missing], error="its stored object was missing")
            await queue.requeue(moved)
            requeued_missing = len(moved)
    return ReconcileReport(requeued=requeued, missing_objects=[(str(i), k) for i, k in missing],
                           requeued_missing=requeued_missing)
