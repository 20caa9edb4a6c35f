"""Orphan collection: objects that no row points at, and rows that point at no object."""

from __future__ import annotations

import logging
import uuid

from mediacache.db.media_repository import MediaRepository
from mediacache.db.repository import AssetRepository
from mediacache.errors import StorageError
from mediacache.maintenance.reconcile import find_missing_objects
from mediacache.records import GcReport
from mediacache.storage.base import ObjectStore
from mediacache.storage.local import LocalStore

log = logging.getLogger("mediacache.maintenance.orphans")

_BATCH = 500
STALE_TEMPORARY_S = 3600.0


def _asset_of(key: str) -> uuid.UUID | None:
    parts = key.split("/")
    # media/<id>/<attempt token><ext>, or a derivative: media/<id>/d/<kind>-<width>.webp
    if parts[0] == "media" and (len(parts) == 3 or (len(parts) == 4 and parts[2] == "d")):
        try:
            return uuid.UUID(parts[1])
        except ValueError:
            return None
    return None


async def collect(assets: AssetRepository, store: ObjectStore, *, dry_run: bool = True,
                  media: MediaRepository | None = None) -> GcReport:
    """Finds (and unless `dry_run`, deletes) orphan objects; reports rows whose object is missing.

    Objects live under `media/<asset id>/<attempt token><ext>`, so the database answers for each
    object which row, if any, owns it: the asset's cache_key, or the key an attempt that still holds
    a live lease is writing, or for `media/<id>/d/...` a derivative row of it. Only the `media/`
    prefix is listed; rows are checked by HEAD requests. Legacy keys outside `media/` are never touched.
    """
    orphans: list[tuple[str, int]] = []
    batch: list[tuple[uuid.UUID, str, int]] = []

    async def judge() -> None:
        owners = await assets.key_owners([asset_id for asset_id, _, _ in batch])
        derived_ids = [asset_id for asset_id, key, _ in batch if key.split("/")[2] == "d"]
        derived = await media.derivative_keys(derived_ids) if media is not None and derived_ids else {}
        for asset_id, key, size in batch:
            owner = owners.get(asset_id)
            if owner is None:
                orphans.append((key, size))
                continue
            if key.split("/")[2] == "d":
                # Without the derivative table to ask (media=None), a derivative is never judged.
                if media is not None and key not in derived.get(asset_id, set()):
                    orphans.append((key, size))
                continue
            cache_key, live_token = owner
            in_flight = live_token is not None and key.split("/")[2].startswith(live_token)
            if key != cache_key and not in_flight:
                orphans.append((key, size))
        batch.clear()

    async for info in store.list_keys("media/"):
        asset_id = _asset_of(info.key)
        if asset_id is None:
            continue
        batch.append((asset_id, info.key, info.size_bytes))
        if len(batch) >= _BATCH:
            await judge()
    if batch:
        await judge()

    deleted = 0
    if not dry_run:
        for key, _size in orphans:
            try:
                await store.delete(key)
                deleted += 1
            except StorageError as exc:
                log.warning("could not delete orphan %s: %s", key, exc)
    stale = 0
    if isinstance(store, LocalStore) and not dry_run:
        stale = await store.sweep_temporary(STALE_TEMPORARY_S)
    dangling = await find_missing_objects(assets, store)
    return GcReport(orphan_objects=[k for k, _ in orphans], orphan_bytes=sum(s for _, s in orphans),
                    deleted_objects=deleted, dangling_rows=[(str(i), k) for i, k in dangling],
                    stale_temporary_files=stale)
