"""Cleanup: settled assets not requested for N days go, their rows first, then each object no row holds any more."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from mediacache.broker.jobs import JobQueue
from mediacache.db.columns import utcnow
from mediacache.db.media_repository import MediaRepository
from mediacache.db.repository import AssetRepository
from mediacache.errors import InvalidArgumentError, QueueUnavailableError
from mediacache.records import CleanupResult
from mediacache.storage.base import ObjectStore

log = logging.getLogger("mediacache.cleanup")

PAGE_SIZE = 500

# "Which of these asset ids does an application row reference?": the one question cleanup asks
# of the application side.
ReferencedCheck = Callable[[Sequence[uuid.UUID]], Awaitable[set[uuid.UUID]]]
# Called between the steps of a removal ("rows_deleted"), so tests can force interleavings.
Pause = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Removed:
    assets: int
    objects_not_deleted: int


async def remove_assets(assets: AssetRepository, store: ObjectStore, queue: JobQueue, ids: Sequence[uuid.UUID],
                        *, pause: Pause | None = None) -> Removed:
    """Deletes the rows of the given settled assets, then each of their objects that no row holds.

    Rows first, because several assets may share one object (content deduplication): an object is
    garbage only when no row holds its key, and that can only be judged once the rows are gone.
    Once no row holds a key no download can take that object again, since sharing needs a CACHED
    holder (see `AssetRepository.mark_cached`), so the check cannot be outrun. An object whose
    delete fails is left to `gc`, which finds it as an orphan; its asset is gone either way.
    """
    removed, keys = await assets.upkeep.delete_settled(ids)
    if pause is not None:
        await pause("rows_deleted")
    not_deleted = await delete_unheld(assets, store, keys)
    with contextlib.suppress(QueueUnavailableError):
        await queue.remove(ids)
    return Removed(removed, not_deleted)


async def delete_unheld(assets: AssetRepository, store: ObjectStore, keys: set[str]) -> int:
    """Deletes the objects among `keys` that no row holds; returns how many deletes failed."""
    still_held = await assets.keys_in_use(keys)
    return await _delete_all(store, keys - still_held)


async def _delete_all(store: ObjectStore, keys: set[str]) -> int:
    """Deletes every key; returns how many deletes failed (their objects are left to gc)."""
    if not keys:
        return 0
    failed = await store.delete_many(keys)
    if failed:
        log.warning("could not delete %d objects (mediacache gc removes them later)", len(failed))
    return len(failed)


async def remove_settled(assets: AssetRepository, store: ObjectStore, queue: JobQueue, *, days: int,
                         referenced: ReferencedCheck | None, page_size: int = PAGE_SIZE,
                         pause: Pause | None = None,
                         on_progress: Callable[[int], None] | None = None,
                         media: MediaRepository | None = None, busy_share: float = 1.0,
                         rest: Callable[[float], Awaitable[None]] = asyncio.sleep) -> CleanupResult:
    """Removes CACHED and FAILED assets last requested more than `days` days ago.

    Pages through the candidates least recently requested first by (last_requested_at, id), so
    each page is one short query and a run stopped half-way can simply be run again. With
    `referenced`, assets that an application row still points at are kept and counted. An
    asset's derivatives (thumbnails, posters) go with it: their rows by ON DELETE CASCADE, their
    objects right after. `on_progress` hears how many candidates each page looked at.

    With `busy_share` below 1, each page is followed by a rest long enough that the pages take
    that share of the run's time: the database (and, where they share a machine, its CPUs) then
    has the rest of the time for the application's own statements.
    """
    if not 0 < busy_share <= 1:
        raise InvalidArgumentError(f"cleanup busy_share={busy_share!r}: give a share of the time above 0 and "
                                   "at most 1 (1 = no rests)")
    cutoff = utcnow() - timedelta(days=days)
    removed = kept_referenced = not_cleaned = 0
    after = None
    while True:
        started = time.monotonic()
        page = await assets.upkeep.settled_before(cutoff, after, page_size)
        if not page:
            break
        after = (page[-1][2], page[-1][0])
        keep = await referenced([asset_id for asset_id, _, _ in page]) if referenced is not None else set()
        kept_referenced += len(keep)
        gone = [i for i, _, _ in page if i not in keep]
        derived = await media.derivative_keys(gone) if media is not None and gone else {}
        done = await remove_assets(assets, store, queue, gone, pause=pause)
        removed += done.assets
        not_cleaned += done.objects_not_deleted
        # Derivatives belong to their asset alone (never shared): once its row is gone, so are they.
        not_cleaned += await _delete_all(store, {k for keys in derived.values() for k in keys})
        if on_progress is not None:
            on_progress(len(page))
        if busy_share < 1:
            await rest((time.monotonic() - started) * (1 / busy_share - 1))
    return CleanupResult(removed=removed, kept_referenced=kept_referenced, not_cleaned=not_cleaned)
