"""Every query on cache_assets; each status change is one conditional UPDATE."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Table,
    Text,
    Uuid,
    and_,
    any_,
    bindparam,
    delete,
    extract,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from mediacache.db.columns import UTCDateTime, utcnow
from mediacache.db.models import CacheAsset, CacheAssetCount, WebhookOutbox
from mediacache.db.transaction import transaction
from mediacache.domain import TRANSITIONS, CacheStatus
from mediacache.events.payload import Event, asset_event
from mediacache.records import AssetRecord

_t = cast(Table, CacheAsset.__table__)
_c = cast(Table, CacheAssetCount.__table__)
_o = cast(Table, WebhookOutbox.__table__)


@dataclass(frozen=True, slots=True)
class Claim:
    """A worker's hold on an asset for one attempt."""

    asset_id: uuid.UUID
    token: str
    original_url: str
    attempts: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Resolvable:
    id: uuid.UUID
    status: CacheStatus
    cache_key: str | None
    original_url: str


_STATUS_BY_VALUE = {s.value: s for s in CacheStatus}
_RECORD_COLUMNS = [_t.c[f.name] for f in fields(AssetRecord)]


def _status_in(*statuses: CacheStatus) -> ColumnElement[bool]:
    # Equalities rather than IN: an IN list is an "expanding" parameter that SQLAlchemy
    # re-renders on every execution, and these statements run for every download.
    return or_(*(_t.c.status == s.value for s in statuses))


# The statements each download runs, built once: only their parameters change.
_NOW = bindparam("b_now", type_=UTCDateTime())
_CLAIM = (
    update(_t)
    .where(_t.c.id == bindparam("b_id"), _status_in(*TRANSITIONS[CacheStatus.DOWNLOADING]),
           or_(_t.c.status == CacheStatus.PENDING.value, _t.c.lease_until.is_(None), _t.c.lease_until < _NOW))
    .values(status=CacheStatus.DOWNLOADING.value, attempts=_t.c.attempts + 1, lease_token=bindparam("b_token"),
            lease_until=bindparam("b_until", type_=UTCDateTime()), updated_at=_NOW)
    .returning(_t.c.original_url, _t.c.attempts, _t.c.created_at)
)
_MARK_CACHED = (
    update(_t)
    .where(_t.c.id == bindparam("b_id"), _t.c.lease_token == bindparam("b_token"),
           _status_in(*TRANSITIONS[CacheStatus.CACHED]))
    .values(status=CacheStatus.CACHED.value, cache_key=bindparam("b_key"), content_type=bindparam("b_type"),
            size_bytes=bindparam("b_size"), sha256=bindparam("b_sha256"), error=None, error_kind=None,
            lease_token=None, lease_until=None, cached_at=_NOW, updated_at=_NOW)
)
_RECORD_FAILURE = (
    update(_t)
    .where(_t.c.id == bindparam("b_id"), _t.c.lease_token == bindparam("b_token"),
           _t.c.status == CacheStatus.DOWNLOADING.value)
    .values(status=bindparam("b_status"), error=bindparam("b_error"), error_kind=bindparam("b_kind"),
            lease_token=None, lease_until=None, updated_at=_NOW)
)


_OUTBOX_COLUMNS = ["event_id", "event_type", "asset_id", "target_url", "payload", "attempts", "created_at",
                   "next_attempt_at"]


def _with_outbox_pg(change: Any) -> Any:
    """`change` and the outbox INSERT as one PostgreSQL statement: a data-modifying CTE, so the event
    rows exist exactly when the status change happened, at the cost of no extra round trip."""
    changed = change.returning(_t.c.id).cte("changed")
    targets = func.unnest(bindparam("b_targets", type_=ARRAY(Text()))).table_valued("url").render_derived()
    rows = (select(bindparam("b_event_id", type_=Uuid()), bindparam("b_event_type", type_=Text()), changed.c.id,
                   targets.c.url, bindparam("b_payload", type_=Text()), literal(0), _NOW, _NOW)
            .select_from(changed).join(targets, true()))
    return insert(_o).from_select(_OUTBOX_COLUMNS, rows)


_MARK_CACHED_PG = _with_outbox_pg(_MARK_CACHED)
_RECORD_FAILURE_PG = _with_outbox_pg(_RECORD_FAILURE)


def _record(row: Any) -> AssetRecord:
    data = dict(row._mapping)
    data["status"] = CacheStatus(data["status"])
    return AssetRecord(**data)


class AssetRepository:
    def __init__(self, engine: AsyncEngine, display_url: str = "the database",
                 webhook_targets: Sequence[str] = ()) -> None:
        self.engine = engine
        self.display_url = display_url
        # Receivers of the events of final outcomes; with none, no outbox row is written at all.
        self.webhook_targets = list(webhook_targets)
        # A single statement is atomic on its own: without BEGIN and COMMIT it costs one round
        # trip instead of three, which is most of the database time of a small download.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    def _tx(self, *, single_statement: bool = False) -> AbstractAsyncContextManager[AsyncConnection]:
        """A transaction (or, for one statement, autocommit); driver errors become DatabaseError."""
        return transaction(self._autocommit if single_statement else self.engine, self.display_url)

    # ---- enqueue -------------------------------------------------------------------------

    async def insert_pending(self, items: Sequence[tuple[uuid.UUID, str]]) -> None:
        now = utcnow()
        rows = [{"id": i, "original_url": u, "status": CacheStatus.PENDING.value, "attempts": 0,
                 "created_at": now, "updated_at": now} for i, u in items]
        async with self._tx(single_statement=len(rows) == 1) as conn:
            await conn.execute(insert(_t), rows)

    async def delete_ids(self, ids: Iterable[uuid.UUID]) -> int:
        ids = list(ids)
        if not ids:
            return 0
        async with self._tx(single_statement=True) as conn:
            result = await conn.execute(delete(_t).where(_t.c.id.in_(ids)))
            return int(result.rowcount or 0)

    # ---- the worker's transitions --------------------------------------------------------

    async def claim(self, asset_id: uuid.UUID, token: str, lease_s: float) -> Claim | None:
        """PENDING (or DOWNLOADING with no live lease) -> DOWNLOADING, held by `token`.

        Returns None when another worker holds a live lease or the asset is no longer waiting.
        """
        now = utcnow()
        params = {"b_id": asset_id, "b_now": now, "b_token": token, "b_until": now + timedelta(seconds=lease_s)}
        async with self._tx(single_statement=True) as conn:
            row = (await conn.execute(_CLAIM, params)).first()
        return None if row is None else Claim(asset_id, token, row.original_url, row.attempts, row.created_at)

    async def renew_lease(self, asset_id: uuid.UUID, token: str, lease_s: float) -> bool:
        now = utcnow()
        stmt = (update(_t).where(_t.c.id == asset_id, _t.c.lease_token == token,
                                 _t.c.status == CacheStatus.DOWNLOADING.value)
                .values(lease_until=now + timedelta(seconds=lease_s)))
        async with self._tx(single_statement=True) as conn:
            return bool((await conn.execute(stmt)).rowcount)

    async def mark_cached(self, claim: Claim, *, cache_key: str, content_type: str | None,
                          size_bytes: int, sha256: str) -> bool:
        """DOWNLOADING -> CACHED, only while `claim` still holds the lease; with webhook targets, the
        `asset.cached` event goes into the outbox in the same transaction."""
        now = utcnow()
        params = {"b_id": claim.asset_id, "b_token": claim.token, "b_now": now, "b_key": cache_key,
                  "b_type": content_type, "b_size": size_bytes, "b_sha256": sha256}
        if not self.webhook_targets:
            async with self._tx(single_statement=True) as conn:
                return bool((await conn.execute(_MARK_CACHED, params)).rowcount)
        after = AssetRecord(id=claim.asset_id, original_url=claim.original_url, status=CacheStatus.CACHED,
                            cache_key=cache_key, content_type=content_type, size_bytes=size_bytes, sha256=sha256,
                            attempts=claim.attempts, error=None, error_kind=None, created_at=claim.created_at,
                            updated_at=now, cached_at=now)
        return await self._change_with_event(_MARK_CACHED, _MARK_CACHED_PG, params, asset_event(after, now=now))

    async def record_failure(self, claim: Claim, *, error: str, error_kind: str, final: bool) -> bool:
        """Records a failed attempt. Final: DOWNLOADING -> FAILED (with its `asset.failed` event in the
        outbox, in the same transaction). Not final: the asset stays DOWNLOADING with its lease
        released, so the retry (or any worker) may claim it at once."""
        now = utcnow()
        params = {"b_id": claim.asset_id, "b_token": claim.token, "b_now": now, "b_error": error[:4000],
                  "b_kind": error_kind,
                  "b_status": (CacheStatus.FAILED if final else CacheStatus.DOWNLOADING).value}
        if not (final and self.webhook_targets):
            async with self._tx(single_statement=True) as conn:
                return bool((await conn.execute(_RECORD_FAILURE, params)).rowcount)
        after = AssetRecord(id=claim.asset_id, original_url=claim.original_url, status=CacheStatus.FAILED,
                            cache_key=None, content_type=None, size_bytes=None, sha256=None,
                            attempts=claim.attempts, error=error[:4000], error_kind=error_kind,
                            created_at=claim.created_at, updated_at=now, cached_at=None)
        return await self._change_with_event(_RECORD_FAILURE, _RECORD_FAILURE_PG, params,
                                             asset_event(after, now=now))

    async def _change_with_event(self, change: Any, change_pg: Any, params: dict[str, Any], event: Event) -> bool:
        """Runs the status change and, only if it happened, writes `event` for every webhook target."""
        if self.engine.dialect.name == "postgresql":
            pg_params = {**params, "b_targets": self.webhook_targets, "b_event_id": event.id,
                         "b_event_type": event.type, "b_payload": event.body}
            async with self._tx(single_statement=True) as conn:
                return bool((await conn.execute(change_pg, pg_params)).rowcount)
        # SQLite has no data-modifying CTEs: one transaction with both statements.
        async with self._tx() as conn:
            if not (await conn.execute(change, params)).rowcount:
                return False
            await conn.execute(insert(_o), [
                {"event_id": event.id, "event_type": event.type, "asset_id": event.asset_id, "target_url": url,
                 "payload": event.body, "attempts": 0, "created_at": event.timestamp,
                 "next_attempt_at": event.timestamp} for url in self.webhook_targets])
            return True

    async def status_of(self, asset_id: uuid.UUID) -> tuple[CacheStatus, datetime | None] | None:
        """The status and the lease end of an asset, or None when it does not exist."""
        async with self._tx(single_statement=True) as conn:
            row = (await conn.execute(select(_t.c.status, _t.c.lease_until).where(_t.c.id == asset_id))).first()
        return None if row is None else (CacheStatus(row.status), row.lease_until)

    # ---- reads ---------------------------------------------------------------------------

    async def get(self, asset_id: uuid.UUID) -> AssetRecord | None:
        async with self._tx(single_statement=True) as conn:
            row = (await conn.execute(select(*_RECORD_COLUMNS).where(_t.c.id == asset_id))).first()
        return None if row is None else _record(row)

    async def get_many(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, AssetRecord]:
        if not ids:
            return {}
        async with self._tx(single_statement=True) as conn:
            rows = (await conn.execute(select(*_RECORD_COLUMNS).where(_t.c.id.in_(list(ids))))).all()
        return {r.id: _record(r) for r in rows}

    async def newest_cached_keys(self, limit: int) -> list[str]:
        """The storage keys of the `limit` most recently cached assets (for the placement check)."""
        stmt = (select(_t.c.cache_key).where(_t.c.status == CacheStatus.CACHED.value, _t.c.cache_key.is_not(None))
                .order_by(_t.c.cached_at.desc()).limit(limit))
        async with self._tx(single_statement=True) as conn:
            return [str(key) for key in (await conn.execute(stmt)).scalars()]

    async def resolvables(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Resolvable]:
        """What URL resolution needs for many ids, in one query."""
        if not ids:
            return {}
        columns = (_t.c.id, _t.c.status, _t.c.cache_key, _t.c.original_url)
        if self.engine.dialect.name == "postgresql":
            # One array parameter keeps the statement text (and its prepared statement) the same
            # for any number of ids; an IN list would be compiled and prepared anew each time.
            stmt = select(*columns).where(_t.c.id == any_(bindparam("ids", type_=ARRAY(Uuid))))
            params: dict[str, Any] = {"ids": list(set(ids))}
        else:
            stmt = select(*columns).where(_t.c.id.in_(set(ids)))
            params = {}
        async with self._tx(single_statement=True) as conn:
            rows = (await conn.execute(stmt, params)).all()
        status_of = _STATUS_BY_VALUE
        return {r.id: Resolvable(r.id, status_of[r.status], r.cache_key, r.original_url) for r in rows}

    async def counts(self) -> tuple[dict[CacheStatus, int], dict[str, int]]:
        """Assets per status, and FAILED assets per error kind, from the counters the triggers keep."""
        stmt = select(_c.c.status, _c.c.error_kind, func.sum(_c.c.assets)).group_by(_c.c.status, _c.c.error_kind)
        by_status = {s: 0 for s in CacheStatus}
        failed_by_kind: dict[str, int] = {}
        async with self._tx(single_statement=True) as conn:
            for status, kind, n in (await conn.execute(stmt)).all():
                n = int(n or 0)
                by_status[CacheStatus(status)] += n
                if status == CacheStatus.FAILED.value and n:
                    failed_by_kind[kind or "unknown"] = failed_by_kind.get(kind or "unknown", 0) + n
        return by_status, failed_by_kind

    # ---- maintenance ---------------------------------------------------------------------

    async def stale_unsettled(self, cutoff: datetime, limit: int) -> list[tuple[uuid.UUID, str]]:
        """PENDING or DOWNLOADING assets untouched since `cutoff` that no live lease holds."""
        now = utcnow()
        stmt = (select(_t.c.id, _t.c.original_url)
                .where(_t.c.status.in_([CacheStatus.PENDING.value, CacheStatus.DOWNLOADING.value]),
                       _t.c.updated_at < cutoff, or_(_t.c.lease_until.is_(None), _t.c.lease_until < now))
                .order_by(_t.c.updated_at).limit(limit))
        async with self._tx(single_statement=True) as conn:
            return [(r.id, r.original_url) for r in (await conn.execute(stmt)).all()]

    async def touch(self, ids: Sequence[uuid.UUID]) -> None:
        """Marks assets as just handled, so the next reconciliation gives their new jobs time."""
        if ids:
            async with self._tx(single_statement=True) as conn:
                await conn.execute(update(_t).where(_t.c.id.in_(list(ids))).values(updated_at=utcnow()))

    async def cached_page(self, after: uuid.UUID | None, limit: int) -> list[tuple[uuid.UUID, str]]:
        """CACHED assets and their keys, in id order after `after` (keyset paging)."""
        stmt = (select(_t.c.id, _t.c.cache_key).where(_t.c.status == CacheStatus.CACHED.value)
                .order_by(_t.c.id).limit(limit))
        if after is not None:
            stmt = stmt.where(_t.c.id > after)
        async with self._tx(single_statement=True) as conn:
            return [(r.id, r.cache_key) for r in (await conn.execute(stmt)).all()]

    async def uncache(self, ids: Sequence[uuid.UUID], *, error: str) -> list[tuple[uuid.UUID, str]]:
        """CACHED -> PENDING for assets whose object is missing; returns (id, url) of those moved."""
        if not ids:
            return []
        stmt = (update(_t).where(_t.c.id.in_(list(ids)), _t.c.status == CacheStatus.CACHED.value)
                .values(status=CacheStatus.PENDING.value, cache_key=None, error=error, error_kind=None,
                        updated_at=utcnow())
                .returning(_t.c.id, _t.c.original_url))
        async with self._tx(single_statement=True) as conn:
            return [(r.id, r.original_url) for r in (await conn.execute(stmt)).all()]

    async def key_owners(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, tuple[str | None, str | None]]:
        """(cache_key, live lease token) per existing asset: what may legitimately own an object."""
        if not ids:
            return {}
        now = utcnow()
        stmt = select(_t.c.id, _t.c.cache_key, _t.c.lease_token, _t.c.lease_until).where(_t.c.id.in_(set(ids)))
        async with self._tx(single_statement=True) as conn:
            rows = (await conn.execute(stmt)).all()
        return {r.id: (r.cache_key, r.lease_token if r.lease_until and r.lease_until > now else None)
                for r in rows}

    async def reset_failed(self, limit: int) -> list[tuple[uuid.UUID, str]]:
        """FAILED -> PENDING for up to `limit` assets; returns (id, url) of those moved."""
        async with self._tx() as conn:
            # Oldest failure first, along ix_cache_assets_status_updated_at: moved rows leave the
            # FAILED set, so the next batch starts where this one ended without a sort of them all.
            ids = (await conn.execute(select(_t.c.id).where(_t.c.status == CacheStatus.FAILED.value)
                                      .order_by(_t.c.updated_at).limit(limit))).scalars().all()
            if not ids:
                return []
            stmt = (update(_t).where(_t.c.id.in_(ids), _t.c.status.in_(
                        [s.value for s in TRANSITIONS[CacheStatus.PENDING]]))
                    .values(status=CacheStatus.PENDING.value, error=None, error_kind=None,
                            updated_at=utcnow())
                    .returning(_t.c.id, _t.c.original_url))
            return [(r.id, r.original_url) for r in (await conn.execute(stmt)).all()]

    async def restore_failed(self, ids: Sequence[uuid.UUID], *, error: str) -> int:
        """PENDING -> FAILED again for assets whose retry could not be queued."""
        if not ids:
            return 0
        stmt = (update(_t).where(_t.c.id.in_(list(ids)), _t.c.status == CacheStatus.PENDING.value)
                .values(status=CacheStatus.FAILED.value, error=error, updated_at=utcnow()))
        async with self._tx(single_statement=True) as conn:
            return int((await conn.execute(stmt)).rowcount or 0)

    async def settled_before(self, cutoff: datetime, after: tuple[datetime, uuid.UUID] | None,
                             limit: int) -> list[tuple[uuid.UUID, str | None, datetime]]:
        """Settled (CACHED or FAILED) assets created before `cutoff`, oldest first, after the
        (created_at, id) position `after` (keyset paging): (id, cache_key, created_at)."""
        stmt = (select(_t.c.id, _t.c.cache_key, _t.c.created_at)
                .where(_t.c.created_at < cutoff,
                       _t.c.status.in_([CacheStatus.CACHED.value, CacheStatus.FAILED.value]))
                .order_by(_t.c.created_at, _t.c.id).limit(limit))
        if after is not None:
            stmt = stmt.where(tuple_(_t.c.created_at, _t.c.id) > tuple_(
                literal(after[0], UTCDateTime()), literal(after[1], Uuid())))
        async with self._tx(single_statement=True) as conn:
            return [(r.id, r.cache_key, r.created_at) for r in (await conn.execute(stmt)).all()]

    async def delete_settled(self, ids: Sequence[uuid.UUID]) -> int:
        """Deletes the given assets if they are still settled (a retry may have moved one since)."""
        if not ids:
            return 0
        stmt = delete(_t).where(and_(_t.c.id.in_(list(ids)),
                                     _t.c.status.in_([CacheStatus.CACHED.value, CacheStatus.FAILED.value])))
        async with self._tx(single_statement=True) as conn:
            return int((await conn.execute(stmt)).rowcount or 0)

    # ---- the HTTP service's dashboard and metrics ----------------------------------------

    async def recent_failures(self, limit: int) -> list[AssetRecord]:
        """FAILED assets, the most recently failed first."""
        stmt = (select(*_RECORD_COLUMNS).where(_t.c.status == CacheStatus.FAILED.value)
                .order_by(_t.c.updated_at.desc()).limit(limit))
        async with self._tx() as conn:
            return [_record(r) for r in (await conn.execute(stmt)).all()]

    async def cached_per_bucket(self, since: datetime, bucket_s: int) -> dict[int, int]:
        """Assets cached since `since`, counted per `bucket_s`-second bucket: {bucket start (unix s): n}."""
        # extract('epoch') compiles to strftime('%s') on SQLite and EXTRACT(EPOCH ...) on PostgreSQL;
        # the integer cast and floor division then give the same buckets on both. The divisor is a
        # literal so that PostgreSQL sees the SELECT and GROUP BY expressions as the same one.
        bucket = extract("epoch", _t.c.cached_at).cast(BigInteger) // literal_column(str(int(bucket_s)), BigInteger)
        stmt = (select(bucket.label("bucket"), func.count()).where(_t.c.cached_at >= since)
                .group_by(bucket))
        async with self._tx() as conn:
            return {int(b) * bucket_s: int(n) for b, n in (await conn.execute(stmt)).all()}

    async def stored_bytes(self) -> int:
        """The total size of the objects of CACHED assets, from the counters the triggers keep."""
        stmt = select(func.coalesce(func.sum(_c.c.bytes), 0)).where(_c.c.status == CacheStatus.CACHED.value)
        async with self._tx(single_statement=True) as conn:
            return int((await conn.execute(stmt)).scalar() or 0)
