"""Trim: least recently requested unreferenced assets go until the stored objects fit a byte budget."""

from __future__ import annotations

import uuid
from datetime import datetime

from mediacache.broker.jobs import JobQueue
from mediacache.db.repository import AssetRepository
from mediacache.maintenance.cleanup import PAGE_SIZE, ReferencedCheck, remove_assets
from mediacache.storage.base import ObjectStore


async def trim(assets: AssetRepository, store: ObjectStore, queue: JobQueue, *, max_bytes: int,
               referenced: ReferencedCheck, page_size: int = PAGE_SIZE) -> int:
    """Removes CACHED assets, least recently requested first and never one an application row
    references, until the stored bytes (each object once) are at most `max_bytes`. Returns how
    many assets were removed.

    An asset frees its object's bytes only when it is the last one holding the object, so each
    page is planned with the number of rows per key, and the stored total is read again after
    each page rather than trusted from the plan (other processes write meanwhile).
    """
    removed = 0
    after: tuple[datetime, uuid.UUID] | None = None
    stored = await assets.reports.stored_bytes()
    while stored > max_bytes:
        page = await assets.upkeep.cached_by_last_request(after, page_size)
        if not page:
            break
        keep = await referenced([asset_id for asset_id, _, _, _ in page])
        holders = await assets.upkeep.key_counts(key for _, key, _, _ in page if key)
        planned: list[uuid.UUID] = []
        freed = 0
        for asset_id, key, size_bytes, requested_at in page:
            # The next page starts after the last asset looked at, so none is skipped unseen.
            after = (requested_at, asset_id)
            if asset_id in keep:
                continue
            planned.append(asset_id)
            holders[key] = holders.get(key, 1) - 1
            if holders[key] <= 0:
                freed += size_bytes
            if stored - freed <= max_bytes:
                break
        if planned:
            removed += (await remove_assets(assets, store, queue, planned)).assets
        stored = await assets.reports.stored_bytes()
    return removed
