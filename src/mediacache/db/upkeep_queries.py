"""The maintenance queries on cache_assets: lost downloads, missing objects, cleanup, retries, trimming."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Uuid, and_, delete, func, literal, or_, select, tuple_, update

from mediacache.db.access import DatabaseAccess
from mediacache.db.columns import UTCDateTime, utcnow
from mediacache.db.models import ASSETS as _t
from mediacache.domain import TRANSITIONS, CacheStatus


class UpkeepQueries:
    """What reconcile, cleanup, retries and trim read and change, in pages and batches."""

    def __init__(self, db: DatabaseAccess) -> None:
        self._db = db

    async def stale_unsettled(self, cutoff: datetime, limit: int, *,
                              pending_cutoff: datetime | None = None) -> list[tuple[uuid.UUID, str]]:
        """PENDING or DOWNLOADING assets untouched since `cutoff` (PENDING ones: since
        `pending_cutoff`, when given) that no live lease holds."""
        now = utcnow()
        pending_cutoff = cutoff if pending_cutoff is None else pending_cutoff
        stmt = (select(_t.c.id, _t.c.original_url)
                .where(or_(and_(_t.c.status == CacheStatus.PENDING.value, _t.c.updated_at < pending_cutoff),
                           and_(_t.c.status == CacheStatus.DOWNLOADING.value, _t.c.updated_at < cutoff)),
                       or_(_t.c.lease_until.is_(None), _t.c.lease_until < now))
                .order_by(_t.c.updated_at).limit(limit))
        async with self._db.tx(single_statement=True) as conn:
            return [(r.id, r.original_url) for r in (await conn.execute(stmt)).all()]

    async def touch(self, ids: Sequence[uuid.UUID]) -> None:
        """Marks assets as just handled, so the next reconciliation gives their new jobs time."""
        if ids:
            async with self._db.tx(single_statement=True) as conn:
                await conn.execute(update(_t).where(_t.c.id.in_(list(ids))).values(updated_at=utcnow()))

    async def cached_page(self, after: uuid.UUID | None, limit: int) -> list[tuple[uuid.UUID, str]]:
        """CACHED assets and their keys, in id order after `after` (keyset paging)."""
        stmt = (select(_t.c.id, _t.c.cache_key).where(_t.c.status == CacheStatus.CACHED.value)
                .order_by(_t.c.id).limit(limit))
        if after is not None:
            stmt = stmt.where(_t.c.id > after)
        async with self._db.tx(single_statement=True) as conn:
            return [(r.id, r.cache_key) for r in (await conn.execute(stmt)).all()]

    async def uncache(self, ids: Sequence[uuid.UUID], *, error: str) -> list[tuple[uuid.UUID, str]]:
        """CACHED -> PENDING for assets whose object is missing; returns (id, url) of those moved."""
        if not ids:
            return []
        stmt = (update(_t).where(_t.c.id.in_(list(ids)), _t.c.status == CacheStatus.CACHED.value)
                .values(status=CacheStatus.PENDING.value, cache_key=None, error=error, error_kind=None,
                        updated_at=utcnow())
                .returning(_t.c.id, _t.c.original_url))
        async with self._db.tx(single_statement=True) as conn:
            return [(r.id, r.original_url) for r in (await conn.execute(stmt)).all()]

    async def key_owners(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, tuple[str | None, str | None]]:
        """(cache_key, live lease token) per existing asset: what may legitimately own an object."""
        if not ids:
            return {}
        now = utcnow()
        stmt = select(_t.c.id, _t.c.cache_key, _t.c.lease_token, _t.c.lease_until).where(_t.c.id.in_(set(ids)))
        async with self._db.tx(single_statement=True) as conn:
            rows = (await conn.execute(stmt)).all()
        return {r.id: (r.cache_key, r.lease_token if r.lease_until and r.lease_until > now else None)
                for r in rows}

    async def reset_failed(self, limit: int) -> list[tuple[uuid.UUID, str]]:
        """FAILED -> PENDING for up to `limit` assets; returns (id, url) of those moved.

        `attempts` starts again at 0: it counts the attempts of this try of the asset, which is
        what the dashboard and `get_asset` show, not every attempt since the asset was created.
        """
        async with self._db.tx() as conn:
            # Oldest failure first, along ix_cache_assets_status_updated_at: moved rows leave the
            # FAILED set, so the next batch starts where this one ended without a sort of them all.
            ids = (await conn.execute(select(_t.c.id).where(_t.c.status == CacheStatus.FAILED.value)
                                      .order_by(_t.c.updated_at).limit(limit))).scalars().all()
            if not ids:
                return []
            stmt = (update(_t).where(_t.c.id.in_(ids), _t.c.status.in_(
                        [s.value for s in TRANSITIONS[CacheStatus.PENDING]]))
                    .values(status=CacheStatus.PENDING.value, error=None, error_kind=None, attempts=0,
                            updated_at=utcnow())
                    .returning(_t.c.id, _t.c.original_url))
            return [(r.id, r.original_url) for r in (await conn.execute(stmt)).all()]

    async def restore_failed(self, ids: Sequence[uuid.UUID], *, error: str) -> int:
        """PENDING -> FAILED again for assets whose retry could not be queued."""
        if not ids:
            return 0
        stmt = (update(_t).where(_t.c.id.in_(list(ids)), _t.c.status == CacheStatus.PENDING.value)
                .values(status=CacheStatus.FAILED.value, error=error, updated_at=utcnow()))
        async with self._db.tx(single_statement=True) as conn:
            return int((await conn.execute(stmt)).rowcount or 0)

    async def settled_before(self, cutoff: datetime, after: tuple[datetime, uuid.UUID] | None,
                             limit: int) -> list[tuple[uuid.UUID, str | None, datetime]]:
        """Settled (CACHED or FAILED) assets last requested before `cutoff`, least recently requested
        first, after the (last_requested_at, id) position `after` (keyset paging):
        (id, cache_key, last_requested_at)."""
        stmt = (select(_t.c.id, _t.c.cache_key, _t.c.last_requested_at)
                .where(_t.c.last_requested_at < cutoff,
                       _t.c.status.in_([CacheStatus.CACHED.value, CacheStatus.FAILED.value])))
        stmt = self._by_last_request(stmt, after, limit)
        async with self._db.tx(single_statement=True) as conn:
            return [(r.id, r.cache_key, r.last_requested_at) for r in (await conn.execute(stmt)).all()]

    def _by_last_request(self, stmt: Select[Any], after: tuple[datetime, uuid.UUID] | None,
                         limit: int) -> Select[Any]:
        stmt = stmt.order_by(_t.c.last_requested_at, _t.c.id).limit(limit)
        if after is not None:
            stmt = stmt.where(tuple_(_t.c.last_requested_at, _t.c.id) > tuple_(
                literal(after[0], UTCDateTime()), literal(after[1], Uuid())))
        return stmt

    async def cached_by_last_request(self, after: tuple[datetime, uuid.UUID] | None,
                                     limit: int) -> list[tuple[uuid.UUID, str, int, datetime]]:
        """CACHED assets, least recently requested first (keyset paging as `settled_before`):
        (id, cache_key, size_bytes, last_requested_at)."""
        stmt = self._by_last_request(
            select(_t.c.id, _t.c.cache_key, _t.c.size_bytes, _t.c.last_requested_at)
            .where(_t.c.status == CacheStatus.CACHED.value, _t.c.last_requested_at.is_not(None)), after, limit)
        async with self._db.tx(single_statement=True) as conn:
            return [(r.id, r.cache_key, int(r.size_bytes or 0), r.last_requested_at)
                    for r in (await conn.execute(stmt)).all()]

    async def delete_settled(self, ids: Sequence[uuid.UUID]) -> tuple[int, set[str]]:
        """Deletes the given assets if they are still settled (a retry may have moved one since).

        Returns how many went and the storage keys they held: the caller deletes an object only
        once `keys_in_use` says no row holds its key any more (several assets may share one).
        """
        if not ids:
            return 0, set()
        stmt = (delete(_t).where(and_(_t.c.id.in_(list(ids)),
                                      _t.c.status.in_([CacheStatus.CACHED.value, CacheStatus.FAILED.value])))
                .returning(_t.c.cache_key))
        async with self._db.tx(single_statement=True) as conn:
            keys = list((await conn.execute(stmt)).scalars().all())
        return len(keys), {k for k in keys if k}

    async def key_counts(self, keys: Iterable[str]) -> dict[str, int]:
        """How many asset rows hold each of `keys`."""
        keys = list(set(keys))
        if not keys:
            return {}
        stmt = select(_t.c.cache_key, func.count()).where(_t.c.cache_key.in_(keys)).group_by(_t.c.cache_key)
        async with self._db.tx(single_statement=True) as conn:
            return {k: int(n) for k, n in (await conn.execute(stmt)).all()}
