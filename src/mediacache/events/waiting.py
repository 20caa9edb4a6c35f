"""Waiting for assets to become final, for any number of waiters at the cost of one reader.

Every waiter of a process registers with one AssetWatcher. The watcher re-reads the database (one
query for all watched ids) when an announcement names a watched asset, when a waiter arrives, and
on a slow fallback timer in case an announcement was lost. So 200 waiters cost about what one does.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Callable, Sequence

from mediacache.db.repository import AssetRepository
from mediacache.domain import CacheStatus
from mediacache.errors import DatabaseError
from mediacache.events.bus import Announcement, EventBus
from mediacache.events.payload import ASSET_DERIVED
from mediacache.records import AssetRecord, WaitResult

FINAL = (CacheStatus.CACHED, CacheStatus.FAILED)
FALLBACK_S = 5.0
# Announcements arrive in bursts (a batch finishing): a short pause lets one read answer many.
COALESCE_S = 0.02
READ_CHUNK = 500


class _Waiter:
    def __init__(self, ids: list[uuid.UUID]) -> None:
        self.ids = ids
        self.records: dict[uuid.UUID, AssetRecord] = {}
        self.read = False  # has any read answered for this waiter yet
        self.done = asyncio.Event()

    def open_ids(self) -> list[uuid.UUID]:
        """Ids not known to be final (or gone) yet."""
        if not self.read:
            return list(self.ids)
        return [i for i in self.ids if i in self.records and self.records[i].status not in FINAL]


class AssetWatcher:
    def __init__(self, assets: AssetRepository, bus: EventBus, *, fallback_s: float = FALLBACK_S) -> None:
        self.assets = assets
        self.bus = bus
        self.fallback_s = fallback_s
        self._waiters: set[_Waiter] = set()
        self._watched: Counter[uuid.UUID] = Counter()
        self._dirty = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._unlisten: Callable[[], None] | None = None

    async def wait(self, ids: Sequence[uuid.UUID], timeout_s: float) -> WaitResult:
        wanted = list(dict.fromkeys(ids))
        waiter = _Waiter(wanted)
        self._waiters.add(waiter)
        self._watched.update(wanted)
        if self._unlisten is None:
            self._unlisten = self.bus.listen(self._on_announcement)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_loop(), name="asset-watcher")
        self._dirty.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.done.wait(), timeout=max(0.0, timeout_s))
        finally:
            self._waiters.discard(waiter)
            self._watched.subtract(wanted)
            self._watched += Counter()  # drops the ids nobody watches any more
        return _result(ids, waiter)

    def _on_announcement(self, message: Announcement) -> None:
        # asset.derived changes no status: nothing a waiter waits for.
        if message.type != ASSET_DERIVED and message.asset_id in self._watched:
            self._dirty.set()

    async def _read_loop(self) -> None:
        while self._waiters:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), timeout=self.fallback_s)
            await asyncio.sleep(COALESCE_S)
            self._dirty.clear()
            waiters = list(self._waiters)
            open_ids = sorted({i for w in waiters for i in w.open_ids()})
            try:
                found: dict[uuid.UUID, AssetRecord] = {}
                for start in range(0, len(open_ids), READ_CHUNK):
                    found.update(await self.assets.get_many(open_ids[start:start + READ_CHUNK]))
            except DatabaseError:
                continue  # the fallback timer tries again; waiters keep what they had
            for waiter in waiters:
                for asset_id in waiter.open_ids():
                    record = found.get(asset_id)
                    if record is None:
                        waiter.records.pop(asset_id, None)  # gone counts as final
                    else:
                        waiter.records[asset_id] = record
                waiter.read = True
                if not waiter.open_ids():
                    waiter.done.set()

    async def close(self) -> None:
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None


def _result(ids: Sequence[uuid.UUID], waiter: _Waiter) -> WaitResult:
    not_final = [] if not waiter.read else waiter.open_ids()
    if not waiter.read:
        not_final = list(dict.fromkeys(ids))
    return WaitResult(records=[waiter.records.get(i) for i in ids], not_final=not_final)
