"""Orphan collection: objects that no row points at, and rows that point at no object."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from mediacache.db.media_repository import MediaRepository
from mediacache.db.repository import AssetRepository
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


async def unowned_originals(assets: AssetRepository, found: Sequence[tuple[uuid.UUID, str]]) -> list[str]:
    """Of these originals (`media/<asset id>/<attempt token><ext>`, with the asset of their path),
    the keys that no row holds and no live attempt on their asset is writing.

    Leases are read before rows: an attempt that records its object after the lease look-up is
    seen holding it by the row look-up; in the other order it could slip between the two and have
    its fresh object judged an orphan.
    """
    if not found:
        return []
    owners = await assets.upkeep.key_owners(list({asset_id for asset_id, _ in found}))
    held = await assets.keys_in_use(key for _, key in found)
    unowned = []
    for asset_id, key in found:
        if key in held:
            continue
        live_token = owners.get(asset_id, (None, None))[1]
        if live_token is None or not key.split("/")[2].startswith(live_token):
            unowned.append(key)
    return unowned


async def collect(assets: AssetRepository, store: ObjectStore, *, dry_run: bool = True,
                  media: MediaRepository | None = None) -> GcReport:
    """Finds (and unless `dry_run`, deletes) orphan objects; reports rows whose object is missing.

    Objects live under `media/<asset id>/<attempt token><ext>`. An object is kept while any row
    holds its key as cache_key (with content deduplication, assets other than the one in its path
    may share it), or while the attempt that is writing it still holds a live lease on the asset
    in its path. Once no row holds a key, no download can start sharing it (sharing needs a
    CACHED holder), so the judgement cannot be outrun. Only the `media/` prefix is listed; rows
    are checked against it a page at a time (`ObjectStore.missing_keys`).
    A derivative (`media/<id>/d/...`) is kept while a derivative row holds it. Legacy keys outside
    `media/` are never touched.
    """
    orphans: list[tuple[str, int]] = []
    batch: list[tuple[uuid.UUID, str, int]] = []

    async def judge() -> None:
        originals = [(asset_id, key) for asset_id, key, _ in batch if key.split("/")[2] != "d"]
        unowned = set(await unowned_originals(assets, originals))
        derived_ids = [asset_id for asset_id, key, _ in batch if key.split("/")[2] == "d"]
        derived = await media.derivative_keys(derived_ids) if media is not None and derived_ids else {}
        for asset_id, key, size in batch:
            if key.split("/")[2] == "d":
                # Without the derivative table to ask (media=None), a derivative is never judged.
                if media is not None and key not in derived.get(asset_id, set()):
                    orphans.append((key, size))
            elif key in unowned:
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
    if not dry_run and orphans:
        failed = await store.delete_many([key for key, _ in orphans])
        deleted = len(orphans) - len(failed)
    stale = 0
    if isinstance(store, LocalStore) and not dry_run:
        stale = await store.sweep_temporary(STALE_TEMPORARY_S)
    dangling = await find_missing_objects(assets, store)
    return GcReport(orphan_objects=[k for k, _ in orphans], orphan_bytes=sum(s for _, s in orphans),
                    deleted_objects=deleted, dangling_rows=[(str(i), k) for i, k in dangling],
                    stale_temporary_files=stale)
