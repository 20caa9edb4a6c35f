"""Queries across every `*_key` column: which assets application rows reference, and the legacy-key backfill."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Column, ColumnElement, Table, Text, and_, exists, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mediacache.apptables.models import KEY_COLUMNS
from mediacache.db.columns import utcnow
from mediacache.db.models import CacheAsset
from mediacache.db.transaction import transaction
from mediacache.domain import CacheStatus

_assets = cast(Table, CacheAsset.__table__)


@dataclass(frozen=True, slots=True)
class LegacyRow:
    row_id: int
    key: str
    original_url: str | None


@dataclass(frozen=True, slots=True)
class LegacyAsset:
    """A CACHED asset to create for a legacy key, pointing at the object already stored there."""

    id: uuid.UUID
    key: str
    original_url: str
    content_type: str | None
    size_bytes: int


def _uuid_shaped(col: Column[str | None]) -> ColumnElement[bool]:
    """Text with the dashes of a canonical UUID; the exact check (`parse_asset_id`) runs in Python."""
    return and_(func.length(col) == 36, *(func.substr(col, pos, 1) == "-" for pos in (9, 14, 19, 24)))


class RefsRepository:
    def __init__(self, engine: AsyncEngine, display_url: str = "the database") -> None:
        self.engine = engine
        self.display_url = display_url

    def _tx(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return transaction(self.engine, self.display_url)

    def _asset_id_as_key(self) -> ColumnElement[Any]:
        """cache_assets.id written as the application tables write it: `str(uuid)`."""
        if self.engine.dialect.name == "postgresql":
            return _assets.c.id.cast(Text)
        # SQLite keeps a Uuid as 32 hex digits; add the dashes rather than strip them from the key
        # column, so that the comparison can use the key column's index.
        h = _assets.c.id
        parts = [func.substr(h, start, length) for start, length in ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))]
        text: ColumnElement[Any] = parts[0]
        for part in parts[1:]:
            text = text.op("||")("-").op("||")(part)
        return func.lower(text)

    def _referenced(self) -> ColumnElement[bool]:
        as_key = self._asset_id_as_key()
        return or_(*(exists().where(col == as_key) for _table, col, _url in KEY_COLUMNS))

    # ---- cleanup -------------------------------------------------------------------------

    async def referenced_among(self, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """The ids among `ids` that some `*_key` column holds."""
        if not ids:
            return set()
        stmt = select(_assets.c.id).where(_assets.c.id.in_(list(set(ids))), self._referenced())
        async with self._tx() as conn:
            return set((await conn.execute(stmt)).scalars().all())

    # ---- legacy keys ---------------------------------------------------------------------

    async def count_legacy_candidates(self) -> int:
        """Rows whose key does not look like an asset id, over every key column (for progress)."""
        total = 0
        async with self._tx() as conn:
            for table, col, _url in KEY_COLUMNS:
                stmt = select(func.count()).select_from(table).where(
                    col.is_not(None), col != "", ~_uuid_shaped(col))
                total += int((await conn.execute(stmt)).scalar_one())
        return total

    async def legacy_candidates(self, table: Table, col: Column[str | None], url_col: Column[str | None],
                                after_id: int, limit: int) -> list[LegacyRow]:
        """The next rows after `after_id` (keyset paging) whose key does not look like an asset id."""
        pk = table.c.id
        stmt = (select(pk, col, url_col)
                .where(pk > after_id, col.is_not(None), col != "", ~_uuid_shaped(col))
                .order_by(pk).limit(limit))
        async with self._tx() as conn:
            return [LegacyRow(int(r[0]), str(r[1]), r[2]) for r in (await conn.execute(stmt)).all()]

    async def convert_legacy(self, table: Table, col: Column[str | None], assets: Sequence[LegacyAsset]) -> int:
        """In one transaction: a CACHED asset per legacy key, then every row of `table` holding that key
        rewritten to the asset's id. Returns the rows rewritten."""
        if not assets:
            return 0
        now = utcnow()
        rows = [{"id": a.id, "original_url": a.original_url, "status": CacheStatus.CACHED.value, "cache_key": a.key,
                 "content_type": a.content_type, "size_bytes": a.size_bytes, "attempts": 0, "created_at": now,
                 "updated_at": now, "cached_at": now} for a in assets]
        ins: Any = (postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert)(_assets)
        # The id is derived from the key, so a key met again (another row, another table, a run
        # that was interrupted) lands on the same asset. An existing CACHED asset is left as it is;
        # one that reconciliation moved away from CACHED is pointed at the object again, which a
        # HEAD has just shown to exist.
        upsert = ins.on_conflict_do_update(
            index_elements=[_assets.c.id],
            set_={"status": CacheStatus.CACHED.value, "cache_key": ins.excluded.cache_key,
                  "content_type": ins.excluded.content_type, "size_bytes": ins.excluded.size_bytes,
                  "error": None, "error_kind": None, "lease_token": None, "lease_until": None,
                  "cached_at": now, "updated_at": now},
            where=_assets.c.status != CacheStatus.CACHED.value)
        converted = 0
        async with self._tx() as conn:
            await conn.execute(upsert, rows)
            for a in assets:
                # Conditional on the old value: a row the application rewrote meanwhile is left alone.
                result = await conn.execute(update(table).where(col == a.key).values({col.name: str(a.id)}))
                converted += int(result.rowcount or 0)
        return converted
