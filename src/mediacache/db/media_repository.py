"""Every query on media metadata and cache_asset_derivatives: what the derive worker writes and resolution reads."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, Uuid, and_, any_, bindparam, delete, insert, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine

from mediacache.db.access import DatabaseAccess
from mediacache.db.columns import utcnow
from mediacache.db.models import CacheAsset, CacheAssetDerivative, WebhookOutbox
from mediacache.domain import CacheStatus, MediaState
from mediacache.events.outbox import outbox_rows
from mediacache.events.payload import derived_event

_t = cast(Table, CacheAsset.__table__)
_d = cast(Table, CacheAssetDerivative.__table__)
_o = cast(Table, WebhookOutbox.__table__)
_STATUS_BY_VALUE = {s.value: s for s in CacheStatus}
# The families the derive worker reads; other types are never queued.
DERIVABLE_PREFIXES = ("image/", "video/", "audio/")


@dataclass(frozen=True, slots=True)
class DerivativeRow:
    kind: str
    width: int
    height: int
    content_type: str
    cache_key: str
    size_bytes: int = 0


@dataclass(frozen=True, slots=True)
class MediaMetadata:
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    duration_s: float | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    placeholder: str | None = None


@dataclass(frozen=True, slots=True)
class MediaResolvable:
    """What resolution with sizes needs of one asset: status, keys, metadata and derivatives."""

    id: uuid.UUID
    status: CacheStatus
    cache_key: str | None
    original_url: str
    media_state: str | None
    metadata: MediaMetadata
    derivatives: tuple[DerivativeRow, ...]


def derivable(content_type: str | None) -> bool:
    return bool(content_type) and str(content_type).lower().startswith(DERIVABLE_PREFIXES)


def _meta(row: Any) -> MediaMetadata:
    return MediaMetadata(width=row.width, height=row.height, frames=row.frames, duration_s=row.duration_s,
                         video_codec=row.video_codec, audio_codec=row.audio_codec, placeholder=row.placeholder)


_DERIVATIVE_COLUMNS = (_d.c.kind, _d.c.width.label("d_width"), _d.c.height.label("d_height"),
                       _d.c.content_type.label("d_type"), _d.c.cache_key.label("d_key"),
                       _d.c.size_bytes.label("d_size"))


def _derivative(row: Any) -> DerivativeRow:
    return DerivativeRow(row.kind, row.d_width, row.d_height, row.d_type, row.d_key, row.d_size)


class MediaRepository:
    def __init__(self, engine: AsyncEngine, display_url: str = "the database",
                 webhook_targets: Sequence[str] = ()) -> None:
        # Receivers of asset.derived; with none, no outbox row is written.
        self.webhook_targets = list(webhook_targets)
        self._db = DatabaseAccess(engine, display_url)

    def _ids_filter(self, ids: Sequence[uuid.UUID]) -> tuple[Any, dict[str, Any]]:
        if self._db.dialect == "postgresql":
            # One array parameter: the same statement text (and prepared statement) for any count.
            return _t.c.id == any_(bindparam("ids", type_=ARRAY(Uuid))), {"ids": list(set(ids))}
        return _t.c.id.in_(set(ids)), {}

    # ---- reads ---------------------------------------------------------------------------

    async def derivatives_of(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[DerivativeRow]]:
        """The derivative rows of each asset among `ids`, narrowest first (one query)."""
        if not ids:
            return {}
        stmt = (select(_d.c.asset_id, *_DERIVATIVE_COLUMNS).where(_d.c.asset_id.in_(set(ids)))
                .order_by(_d.c.asset_id, _d.c.kind, _d.c.width))
        async with self._db.tx(single_statement=True) as conn:
            rows = (await conn.execute(stmt)).all()
        out: dict[uuid.UUID, list[DerivativeRow]] = {}
        for r in rows:
            out.setdefault(r.asset_id, []).append(_derivative(r))
        return out

    async def resolvables(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, MediaResolvable]:
        """Assets with their metadata and derivatives, in ONE statement (a left join), for any count."""
        if not ids:
            return {}
        where, params = self._ids_filter(ids)
        stmt = (select(_t.c.id, _t.c.status, _t.c.cache_key, _t.c.original_url, _t.c.media_state, _t.c.width,
                       _t.c.height, _t.c.frames, _t.c.duration_s, _t.c.video_codec, _t.c.audio_codec,
                       _t.c.placeholder, *_DERIVATIVE_COLUMNS)
                .select_from(_t.outerjoin(_d, _d.c.asset_id == _t.c.id)).where(where))
        async with self._db.tx(single_statement=True) as conn:
            rows = (await conn.execute(stmt, params)).all()
        first: dict[uuid.UUID, Any] = {}
        derivatives: dict[uuid.UUID, list[DerivativeRow]] = {}
        for r in rows:
            first.setdefault(r.id, r)
            if r.d_key is not None:
                derivatives.setdefault(r.id, []).append(_derivative(r))
        return {i: MediaResolvable(i, _STATUS_BY_VALUE[r.status], r.cache_key, r.original_url, r.media_state,
                                   _meta(r), tuple(sorted(derivatives.get(i, ()), key=lambda d: (d.kind, d.width))))
                for i, r in first.items()}

    async def derivative_keys(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, set[str]]:
        """The stored keys of the derivatives of each asset among `ids`."""
        return {i: {d.cache_key for d in rows} for i, rows in (await self.derivatives_of(ids)).items()}

    async def derive_candidates(self, *, after: uuid.UUID | None, limit: int, missing_only: bool,
                                since: datetime | None) -> list[uuid.UUID]:
        """CACHED images, videos and audio in id order after `after` (keyset paging): with
        `missing_only`, those without metadata (never derived, or queued and not yet done)."""
        stmt = (select(_t.c.id).where(_t.c.status == CacheStatus.CACHED.value,
                                      or_(*(_t.c.content_type.like(f"{p}%") for p in DERIVABLE_PREFIXES)))
                .order_by(_t.c.id).limit(limit))
        if missing_only:
            stmt = stmt.where(or_(_t.c.media_state.is_(None), _t.c.media_state == MediaState.PENDING.value))
        if since is not None:
            stmt = stmt.where(_t.c.cached_at >= since)
        if after is not None:
            stmt = stmt.where(_t.c.id > after)
        async with self._db.tx(single_statement=True) as conn:
            return list((await conn.execute(stmt)).scalars().all())

    # ---- writes --------------------------------------------------------------------------

    async def set_state(self, ids: Sequence[uuid.UUID], state: MediaState, *, only_if_unset: bool = False) -> int:
        if not ids:
            return 0
        stmt = update(_t).where(_t.c.id.in_(list(ids)), _t.c.status == CacheStatus.CACHED.value)
        if only_if_unset:
            stmt = stmt.where(_t.c.media_state.is_(None))
        async with self._db.tx(single_statement=True) as conn:
            return int((await conn.execute(stmt.values(media_state=state.value))).rowcount or 0)

    async def record(self, asset_id: uuid.UUID, *, metadata: MediaMetadata, state: MediaState, error: str | None,
                     derivatives: Sequence[DerivativeRow]) -> tuple[bool, set[str]]:
        """Writes an asset's metadata and replaces its derivative rows, in one transaction, and with
        webhook targets its `asset.derived` event into the outbox in that same transaction.

        Only while the asset is CACHED (cleanup may have removed it meanwhile). Returns whether it
        was written, and the keys of derivative rows it replaced that no new row holds (objects to delete).
        """
        values = {f: getattr(metadata, f) for f in MediaMetadata.__slots__}
        media_error = error[:4000] if error else None
        async with self._db.tx() as conn:
            asset = (await conn.execute(
                update(_t).where(_t.c.id == asset_id, _t.c.status == CacheStatus.CACHED.value)
                .values(media_state=state.value, media_error=media_error, **values)
                .returning(_t.c.id, _t.c.status, _t.c.cache_key, _t.c.content_type, _t.c.original_url))).first()
            if asset is None:
                return False, set()
            old = set((await conn.execute(
                delete(_d).where(_d.c.asset_id == asset_id).returning(_d.c.cache_key))).scalars().all())
            rows = [{"asset_id": asset_id, "kind": d.kind, "width": d.width, "height": d.height,
                     "content_type": d.content_type, "cache_key": d.cache_key, "size_bytes": d.size_bytes}
                    for d in derivatives]
            if rows:
                await conn.execute(insert(_d), rows)
            if self.webhook_targets:
                ordered = sorted(rows, key=lambda r: (r["kind"], r["width"]))  # narrowest first, as the API lists them
                event = derived_event(dict(asset._mapping), {**values, "media_state": state.value,
                                                             "media_error": media_error}, ordered, now=utcnow())
                await conn.execute(insert(_o), outbox_rows(event, self.webhook_targets))
        return True, old - {d.cache_key for d in derivatives}

    async def delete_rows_of(self, ids: Sequence[uuid.UUID]) -> None:
        """Removes the derivative rows of `ids` (cleanup does, after deleting their objects)."""
        if ids:
            async with self._db.tx(single_statement=True) as conn:
                await conn.execute(delete(_d).where(and_(_d.c.asset_id.in_(list(ids)))))
