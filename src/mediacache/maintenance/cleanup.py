"""Cleanup: settled assets older than N days go, their stored object first, then their row."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

from mediacache.broker.jobs import JobQueue
from mediacache.db.columns import utcnow
from mediacache.db.media_repository import MediaRepository
from mediacache.db.repository import AssetRepository
from mediacache.errors import QueueUnavailableError, StorageError
from mediacache.records import CleanupResult
from mediacache.storage.base import ObjectStore

log = logging.getLogger("mediacache.cleanup")

PAGE_SIZE = 500

# "Which of these asset ids does an application row reference?": the one question cleanup asks
# of the application side.
ReferencedCheck = Callable[[Sequence[uuid.UUID]], Awaitable[set[uuid.UUID]]]


async def remove_settled(assets: AssetRepository, store: ObjectStore, queue: JobQueue, *, days: int,
                         referenced: ReferencedCheck | None, page_size: int = PAGE_SIZE,
                         on_progress: Callable[[int], None] | None = None,
                         media: MediaRepository | None = None) -> CleanupResult:
    """Removes CACHED and FAILED assets created more than `days` days ago.

    Pages through the candidates oldest first by (created_at, id), so each page is one short
    query and a run stopped half-way can simply be run again. With `referenced`, assets that an
    application row still points at are kept and counted. An object is deleted before its row,
    and a row whose object cannot be deleted is kept, so no row points nowhere and no object is
    orphaned; an asset's derivatives (thumbnails, posters) are deleted before its original, and their
    rows go with the asset's (ON DELETE CASCADE). `on_progress` hears how many candidates each page
    looked at.
    """
    cutoff = utcnow() - timedelta(days=days)
    removed = kept_referenced = not_cleaned = 0
    after = None
    while page := await assets.settled_before(cutoff, after, page_size):
        after = (page[-1][2], page[-1][0])
        keep = await referenced([asset_id for asset_id, _, _ in page]) if referenced is not None else set()
        kept_referenced += len(keep)
        deletable: list[uuid.UUID] = []
        derived = await media.derivative_keys([i for i, _, _ in page if i not in keep]) if media else {}
        for asset_id, key, _created_at in page:
            if asset_id in keep:
                continue
            try:
                for derivative in sorted(derived.get(asset_id, ())):
                    await store.delete(derivative)
                if key:
                    await store.delete(key)
                deletable.append(asset_id)
            except StorageError as exc:
                log.warning("kept asset %s: its object %s could not be deleted: %s", asset_id, key, exc)
                not_cleaned += 1
        removed += await assets.delete_settled(deletable)
        with contextlib.suppress(QueueUnavailableError):
            await queue.remove(deletable)
        if on_progress is not None:
            on_progress(len(page))
    return CleanupResult(removed=removed, kept_referenced=kept_referenced, not_cleaned=not_cleaned)
