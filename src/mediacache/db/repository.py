"""Every query on cache_assets; each status change is one conditional UPDATE."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    BigInteger,
    Select,
    String,
    Table,
    Text,
    Uuid,
    and_,
    any_,
    bindparam,
    case,
    delete,
    extract,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from mediacache.db.columns import UTCDateTime, utcnow
from mediacache.db.driver import DriverStatement, fetch_row, fetch_rows
from mediacache.db.models import LIVE_PREDICATE, CacheAsset, CacheAssetCount, WebhookOutbox
from mediacache.db.transaction import transaction
from mediacache.domain import TRANSITIONS, CacheStatus
from mediacache.errors import DatabaseError
from mediacache.events.outbox import outbox_rows
from mediacache.events.payload import ASSET_CACHED, Event, asset_event, split_at, with_body
from mediacache.fetching.expiry import expires_later, link_expiry
from mediacache.records import AssetRecord

_t = cast(Table, CacheAsset.__table__)
_c = cast(Table, CacheAssetCount.__table__)
_o = cast(Table, WebhookOutbox.__table__)
# Stands in for the cache_key in an asset.cached body until the statement knows the key.
_KEY_IN_BODY = f"mediacache-key-{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class Claim:
    """A worker's hold on an asset for one attempt."""

    asset_id: uuid.UUID
    token: str
    original_url: str
    attempts: int
    created_at: datetime


class Resolvable(NamedTuple):
    """What URL resolution needs of one asset; a tuple, since get_urls builds a thousand at a time."""

    id: uuid.UUID
    status: CacheStatus
    cache_key: str | None
    original_url: str


_STATUS_BY_VALUE = {s.value: s for s in CacheStatus}
# `derivatives` is a list read from its own table (db.media_repository), not a column.
_RECORD_COLUMNS = [_t.c[f.name] for f in fields(AssetRecord) if f.name != "derivatives"]


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
def _mark_cached_statement(dialect: str, *, share: bool) -> Any:
    """DOWNLOADING -> CACHED under the caller's lease, returning the key the asset now points at.

    With `share`, an already stored object with the same sha256 and size is taken instead of the
    new copy, in this same statement. On PostgreSQL the object's holder row is locked FOR SHARE:
    a cleanup deleting that row either waits until this statement has committed (and then sees
    this asset still holding the key, so it keeps the object), or has deleted it already (the
    locked read skips a deleted row and the asset keeps its own copy). SQLite runs writers one at
    a time, so the statement sees the holder either before or after the delete, never in between.
    Either way no CACHED asset ends up pointing at an object that cleanup deletes.
    """
    key: Any = bindparam("b_key")
    if share:
        holder = _t.alias("holder")
        found = (select(holder.c.cache_key)
                 .where(holder.c.sha256 == bindparam("b_sha256"), holder.c.size_bytes == bindparam("b_size"),
                        holder.c.status == CacheStatus.CACHED.value, holder.c.id != bindparam("b_id"),
                        holder.c.cache_key.is_not(None))
                 .limit(1))
        if dialect == "postgresql":
            found = found.with_for_update(read=True)
        key = func.coalesce(found.scalar_subquery(), key)
    return (
        update(_t)
        .where(_t.c.id == bindparam("b_id"), _t.c.lease_token == bindparam("b_token"),
               _status_in(*TRANSITIONS[CacheStatus.CACHED]))
        .values(status=CacheStatus.CACHED.value, cache_key=key, content_type=bindparam("b_type"),
                size_bytes=bindparam("b_size"), sha256=bindparam("b_sha256"), error=None, error_kind=None,
                lease_token=None, lease_until=None, cached_at=_NOW, updated_at=_NOW)
        .returning(_t.c.cache_key)
    )


# mark_cached with sharing on PostgreSQL: the function of migration 0011, its UPDATE built as
# _mark_cached_statement's, after a lock on the bytes. It returns NULL when the lease was lost.
_MARK_CACHED_IN_TURN_PG = select(func.mediacache_mark_cached(
    bindparam("b_id", type_=Uuid()), bindparam("b_token", type_=String()), bindparam("b_key", type_=Text()),
    bindparam("b_type", type_=String()), bindparam("b_size", type_=BigInteger()),
    bindparam("b_sha256", type_=String()), _NOW).label("cache_key"))


# URL resolution's one query: one array parameter keeps the statement text (and its prepared
# statement) the same for any number of ids, where an IN list would be compiled and prepared anew.
_RESOLVABLES_PG = (select(_t.c.id, _t.c.status, _t.c.cache_key, _t.c.original_url)
                   .where(_t.c.id == any_(bindparam("ids", type_=ARRAY(Uuid)))))


# converge_copies on PostgreSQL in one statement: the holders locked, the winner chosen and the
# others pointed at it, in autocommit. As BEGIN, SELECT ... FOR UPDATE, UPDATE, COMMIT it cost
# every download with deduplication on three round trips instead of one.
_CONVERGE_PG = text("""
WITH holders AS (
    SELECT id, cache_key FROM cache_assets
    WHERE sha256 = :b_sha256 AND size_bytes = :b_size AND status = :b_cached AND cache_key IS NOT NULL
    FOR UPDATE),
winner AS (SELECT min(cache_key) AS key FROM holders),
moved AS (
    UPDATE cache_assets AS t SET cache_key = winner.key
    FROM holders, winner
    WHERE t.id = holders.id AND holders.cache_key <> winner.key
    RETURNING holders.cache_key AS old_key)
SELECT (SELECT key FROM winner) AS winner, ARRAY(SELECT DISTINCT old_key FROM moved) AS surplus
""")


_LIVE = text(LIVE_PREDICATE)
_LIVE_STATUSES = (CacheStatus.PENDING, CacheStatus.DOWNLOADING, CacheStatus.CACHED)
# A request that lands on an existing asset: it is as young as this request, and one more
# download was saved. Built for one key (the common cache_image) and for many.
_HIT_VALUES = {"requests": _t.c.requests + 1, "last_requested_at": _NOW}
_HIT_ONE = (update(_t).where(_t.c.source_key == bindparam("b_key"), _status_in(*_LIVE_STATUSES))
            .values(**_HIT_VALUES).returning(_t.c.id, _t.c.source_key, _t.c.status, _t.c.original_url))
# The columns of a new PENDING asset as insert_or_find writes them.
_PENDING_COLUMNS = ("id", "original_url", "source_key", "status", "attempts", "requests", "created_at", "updated_at",
                    "last_requested_at", "source_expires_at")
# How many rounds of insert-or-find before giving up: a round fails only when the live asset
# found by the insert settled as FAILED or was cleaned up before the next statement.
_ENQUEUE_ROUNDS = 5
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


_RECORD_FAILURE_PG = _with_outbox_pg(_RECORD_FAILURE)


def _mark_cached_with_outbox_pg(mark_cached: Any) -> Any:
    """mark_cached and its asset.cached outbox rows as one PostgreSQL statement, returning the key.

    The key the asset ends up with is known only inside the statement (an object with the same
    bytes may be taken instead of the new copy), so the body comes in two parts, the JSON before
    and after the key's value, and the statement puts the key between them: one round trip instead
    of BEGIN, UPDATE, INSERT and COMMIT.
    """
    changed = mark_cached.cte("changed")
    targets = func.unnest(bindparam("b_targets", type_=ARRAY(Text()))).table_valued("url").render_derived()
    body = func.concat(bindparam("b_head", type_=Text()), func.to_json(changed.c.cache_key).cast(Text()),
                       bindparam("b_tail", type_=Text()))
    rows = (select(bindparam("b_event_id", type_=Uuid()), literal(ASSET_CACHED), bindparam("b_id", type_=Uuid()),
                   targets.c.url, body, literal(0), _NOW, _NOW)
            .select_from(changed).join(targets, true()).where(changed.c.cache_key.is_not(None)))
    queued = insert(_o).from_select(_OUTBOX_COLUMNS, rows).returning(_o.c.id).cte("queued")
    # A data-modifying CTE runs whether or not the query reads it; add_cte renders it unreferenced.
    return select(changed.c.cache_key).add_cte(queued)


def _record(row: Any) -> AssetRecord:
    data = dict(row._mapping)
    data["status"] = CacheStatus(data["status"])
    return AssetRecord(**data)


@dataclass(frozen=True, slots=True)
class Request:
    """One URL to cache: a fresh id to use if no live asset has its source key."""

    new_id: uuid.UUID
    url: str
    source_key: str


class AssetRepository:
    def __init__(self, engine: AsyncEngine, display_url: str = "the database",
                 webhook_targets: Sequence[str] = (), *, content_dedup: bool = True) -> None:
        self.engine = engine
        self.display_url = display_url
        # Receivers of the events of final outcomes; with none, no outbox row is written at all.
        self.webhook_targets = list(webhook_targets)
        dialect = engine.dialect.name
        self.content_dedup = content_dedup
        # On PostgreSQL, downloads of the same bytes record themselves one after the other (see
        # migration 0011): the later one always takes the earlier one's object, so there are never
        # two copies to merge after recording.
        self.records_in_turn = content_dedup and dialect == "postgresql"
        self._mark_cached = (_MARK_CACHED_IN_TURN_PG if self.records_in_turn
                             else _mark_cached_statement(dialect, share=content_dedup))
        self._mark_cached_pg = (_mark_cached_with_outbox_pg(self._mark_cached) if dialect == "postgresql"
                                else None)
        ins: Any = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_t)
        # The conflict target names the partial unique index by its column and predicate, so two
        # requests for one source key (in any process) end with one row and no error: the loser
        # inserts nothing and finds the winner with the next statement.
        self._insert_live = (ins.on_conflict_do_nothing(index_elements=[_t.c.source_key], index_where=_LIVE)
                             .returning(_t.c.id, _t.c.source_key))
        # cache_image's one row, with its columns named, so that it can be compiled once for the driver.
        self._insert_one = self._insert_live.values({name: bindparam(name, type_=_t.c[name].type)
                                                     for name in _PENDING_COLUMNS})
        # A single statement is atomic on its own: without BEGIN and COMMIT it costs one round
        # trip instead of three, which is most of the database time of a small download.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        # On PostgreSQL the statements of every download go through asyncpg itself (db/driver.py).
        self._driver: dict[Any, DriverStatement] = (
            {stmt: DriverStatement.of(stmt, engine.dialect) for stmt in (
                _CLAIM, self._mark_cached, self._mark_cached_pg, _CONVERGE_PG, _RESOLVABLES_PG,
                self._insert_one)}
            if dialect == "postgresql" else {})

    async def _one(self, statement: Any, params: dict[str, Any]) -> Mapping[str, Any] | None:
        """The first row of one statement run on its own, by column name; through asyncpg directly
        for the statements compiled for it."""
        compiled = self._driver.get(statement)
        if compiled is not None:
            return await fetch_row(self._autocommit, self.display_url, compiled, params)
        async with self._tx(single_statement=True) as conn:
            row = (await conn.execute(statement, params)).first()
        return None if row is None else cast(Mapping[str, Any], row._mapping)

    def _tx(self, *, single_statement: bool = False) -> AbstractAsyncContextManager[AsyncConnection]:
        """A transaction (or, for one statement, autocommit); driver errors become DatabaseError."""
        return transaction(self._autocommit if single_statement else self.engine, self.display_url)

    # ---- enqueue -------------------------------------------------------------------------

    async def insert_pending(self, items: Sequence[tuple[uuid.UUID, str]]) -> None:
        now = utcnow()
        rows = [{"id": i, "original_url": u, "status": CacheStatus.PENDING.value, "attempts": 0,
                 "created_at": now, "updated_at": now, "last_requested_at": now,
                 "source_expires_at": link_expiry(u)} for i, u in items]
        async with self._tx(single_statement=len(rows) == 1) as conn:
            await conn.execute(insert(_t), rows)

    async def insert_or_find(self, requests: Sequence[Request]) -> tuple[dict[str, uuid.UUID], list[Request]]:
        """One live asset per source key (the keys of `requests` are distinct): a new PENDING asset
        where none is live, else the live one, counted as requested again.

        Returns the asset id per source key, and the requests that created an asset (to queue).
        One INSERT ... ON CONFLICT DO NOTHING, then, only for keys that had a live asset, one
        UPDATE that finds and bumps them. A not yet CACHED asset takes a request's link when that
        link expires later than its own (a fresher signature for the download still to come).
        """
        found: dict[str, uuid.UUID] = {}
        created: list[Request] = []
        todo = list(requests)
        for _ in range(_ENQUEUE_ROUNDS):
            now = utcnow()
            rows = [{"id": r.new_id, "original_url": r.url, "source_key": r.source_key,
                     "status": CacheStatus.PENDING.value, "attempts": 0, "requests": 1, "created_at": now,
                     "updated_at": now, "last_requested_at": now, "source_expires_at": link_expiry(r.url)}
                    for r in todo]
            if len(rows) == 1 and self._insert_one in self._driver:
                # One call of cache_image: through asyncpg directly, like the worker's statements.
                row = await self._one(self._insert_one, rows[0])
                inserted = {row["source_key"]: row["id"]} if row is not None else {}
            else:
                async with self._tx(single_statement=True) as conn:
                    inserted = {row.source_key: row.id for row in
                                (await conn.execute(self._insert_live, rows[0] if len(rows) == 1 else rows)).all()}
            created.extend(r for r in todo if inserted.get(r.source_key) == r.new_id)
            found.update(inserted)
            todo = [r for r in todo if r.source_key not in inserted]
            if not todo:
                break
            hits = await self._hit([r.source_key for r in todo], now)
            fresher = []
            for r in todo:
                hit = hits.get(r.source_key)
                if hit is None:
                    continue
                asset_id, status, url = hit
                found[r.source_key] = asset_id
                if status != CacheStatus.CACHED.value and expires_later(r.url, url):
                    fresher.append((asset_id, url, r.url))
            if fresher:
                await self._take_fresher_links(fresher, now)
            # Keys whose live asset went away between the two statements: insert again, new ids.
            todo = [Request(uuid.uuid4(), r.url, r.source_key) for r in todo if r.source_key not in found]
            if not todo:
                break
        else:
            raise DatabaseError(f"{self.display_url}: could not settle an asset for "
                                f"{todo[0].source_key[:200]!r} after {_ENQUEUE_ROUNDS} rounds; try again")
        return found, created

    async def _hit(self, keys: Sequence[str], now: datetime) -> dict[str, tuple[uuid.UUID, str, str]]:
        if len(keys) == 1:
            stmt, params = _HIT_ONE, {"b_key": keys[0], "b_now": now}
        else:
            stmt = (update(_t).where(_t.c.source_key.in_(list(keys)), _status_in(*_LIVE_STATUSES))
                    .values(**_HIT_VALUES)
                    .returning(_t.c.id, _t.c.source_key, _t.c.status, _t.c.original_url))
            params = {"b_now": now}
        async with self._tx(single_statement=True) as conn:
            return {r.source_key: (r.id, r.status, r.original_url) for r in (await conn.execute(stmt, params)).all()}

    async def _take_fresher_links(self, changes: Sequence[tuple[uuid.UUID, str, str]], now: datetime) -> None:
        """Compare-and-set per asset: only while the asset still waits and still has the old link."""
        waiting = [CacheStatus.PENDING.value, CacheStatus.DOWNLOADING.value]
        async with self._tx() as conn:
            for asset_id, old, new in changes:
                await conn.execute(update(_t).where(_t.c.id == asset_id, _t.c.original_url == old,
                                                    _t.c.status.in_(waiting))
                                   .values(original_url=new, source_expires_at=link_expiry(new), updated_at=now))

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
        row = await self._one(_CLAIM, params)
        return None if row is None else Claim(asset_id, token, row["original_url"], row["attempts"],
                                              row["created_at"])

    async def renew_lease(self, asset_id: uuid.UUID, token: str, lease_s: float) -> bool:
        now = utcnow()
        stmt = (update(_t).where(_t.c.id == asset_id, _t.c.lease_token == token,
                                 _t.c.status == CacheStatus.DOWNLOADING.value)
                .values(lease_until=now + timedelta(seconds=lease_s)))
        async with self._tx(single_statement=True) as conn:
            return bool((await conn.execute(stmt)).rowcount)

    async def mark_cached(self, claim: Claim, *, cache_key: str, content_type: str | None,
                          size_bytes: int, sha256: str) -> str | None:
        """DOWNLOADING -> CACHED, only while `claim` still holds the lease. Returns the key the asset
        points at: `cache_key`, or the key of an already stored object with the same sha256 and size
        (the new copy is then surplus); None when the lease was lost. With webhook targets, the
        `asset.cached` event (with the key the asset ended up with) goes into the outbox in the
        same transaction (on PostgreSQL, in the same statement)."""
        now = utcnow()
        params = {"b_id": claim.asset_id, "b_token": claim.token, "b_now": now, "b_key": cache_key,
                  "b_type": content_type, "b_size": size_bytes, "b_sha256": sha256}
        if not self.webhook_targets:
            row = await self._one(self._mark_cached, params)
            return None if row is None or row["cache_key"] is None else str(row["cache_key"])
        after = AssetRecord(id=claim.asset_id, original_url=claim.original_url, status=CacheStatus.CACHED,
                            cache_key=_KEY_IN_BODY, content_type=content_type, size_bytes=size_bytes,
                            sha256=sha256, attempts=claim.attempts, error=None, error_kind=None,
                            created_at=claim.created_at, updated_at=now, cached_at=now)
        event = asset_event(after, now=now)
        head, tail = split_at(event, _KEY_IN_BODY)
        if self._mark_cached_pg is not None:
            pg_params = {**params, "b_targets": self.webhook_targets, "b_event_id": event.id, "b_head": head,
                         "b_tail": tail}
            row = await self._one(self._mark_cached_pg, pg_params)
            return None if row is None or row["cache_key"] is None else str(row["cache_key"])
        # SQLite has no data-modifying CTEs: one transaction with both statements.
        async with self._tx() as conn:
            found = (await conn.execute(self._mark_cached, params)).first()
            if found is None:
                return None
            stored_key = str(found.cache_key)
            await conn.execute(insert(_o), self._outbox_rows(with_body(event, head + json.dumps(stored_key) + tail)))
        return stored_key

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
            await conn.execute(insert(_o), self._outbox_rows(event))
            return True

    def _outbox_rows(self, event: Event) -> list[dict[str, Any]]:
        return outbox_rows(event, self.webhook_targets)

    async def replace_source(self, asset_id: uuid.UUID, url: str) -> bool:
        """Any status but CACHED (and DOWNLOADING under a live lease) -> PENDING with `url` as its
        source, its expiry read from it, attempts and error reset; False when the asset is not such."""
        now = utcnow()
        stmt = (update(_t)
                .where(_t.c.id == asset_id,
                       or_(_status_in(CacheStatus.PENDING, CacheStatus.FAILED),
                           and_(_t.c.status == CacheStatus.DOWNLOADING.value,
                                or_(_t.c.lease_until.is_(None), _t.c.lease_until < now))))
                .values(status=CacheStatus.PENDING.value, original_url=url, source_expires_at=link_expiry(url),
                        attempts=0, error=None, error_kind=None, lease_token=None, lease_until=None,
                        updated_at=now))
        async with self._tx(single_statement=True) as conn:
            return bool((await conn.execute(stmt)).rowcount)

    async def status_of(self, asset_id: uuid.UUID) -> tuple[CacheStatus, datetime | None] | None:
        """The status and the lease end of an asset, or None when it does not exist."""
        async with self._tx(single_statement=True) as conn:
            row = (await conn.execute(select(_t.c.status, _t.c.lease_until).where(_t.c.id == asset_id))).first()
        return None if row is None else (CacheStatus(row.status), row.lease_until)

    async def failed_at(self, asset_id: uuid.UUID) -> datetime | None:
        """When a FAILED asset failed, or None when it is not FAILED.

        `updated_at` is the time of the failure: on a FAILED asset only transitions write it.
        """
        stmt = select(_t.c.updated_at).where(_t.c.id == asset_id, _t.c.status == CacheStatus.FAILED.value)
        async with self._tx(single_statement=True) as conn:
            return cast(datetime | None, (await conn.execute(stmt)).scalar_one_or_none())

    async def reopen_failed(self, asset_id: uuid.UUID) -> bool:
        """FAILED -> PENDING for one asset, a retry asked for through the queue; `attempts` is kept."""
        stmt = (update(_t).where(_t.c.id == asset_id, _t.c.status == CacheStatus.FAILED.value)
                .values(status=CacheStatus.PENDING.value, error=None, error_kind=None, updated_at=utcnow()))
        async with self._tx(single_statement=True) as conn:
            return bool((await conn.execute(stmt)).rowcount)

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
        status_of = _STATUS_BY_VALUE
        compiled = self._driver.get(_RESOLVABLES_PG)
        if compiled is not None:
            found = await fetch_rows(self._autocommit, self.display_url, compiled, {"ids": list(set(ids))})
            # asyncpg's UUIDs hash and compare as uuid.UUID does, so they key the map as they are.
            return {r[0]: Resolvable(r[0], status_of[r[1]], r[2], r[3]) for r in found}
        stmt = select(_t.c.id, _t.c.status, _t.c.cache_key, _t.c.original_url).where(_t.c.id.in_(set(ids)))
        async with self._tx(single_statement=True) as conn:
            rows = (await conn.execute(stmt)).all()
        return {r.id: Resolvable(r.id, status_of[r.status], r.cache_key, r.original_url) for r in rows}

    async def counts(self, *, expiring_within_s: int | None = None
                     ) -> tuple[dict[CacheStatus, int], dict[str, int], int]:
        """Assets per status and FAILED assets per error kind, from the counters the triggers keep;
        with `expiring_within_s`, also the PENDING assets whose source link expires within that
        many seconds from now, along the status/expiry index (else 0).

        One statement either way, as statistics are read on every dashboard refresh and scrape and
        each round trip shows in their latency. On PostgreSQL it has no parameters (the window is
        `now()` in SQL, the labels inline), so its prepared statement keeps one plan: with the
        window as parameters every execution was planned anew, about 1 ms over the ten indexes of
        cache_assets, longer than running it.
        """
        stmt: Any = (select(literal_column("'c'"), _c.c.status, _c.c.error_kind, func.sum(_c.c.assets))
                     .group_by(_c.c.status, _c.c.error_kind))
        if expiring_within_s is not None:
            if self.engine.dialect.name == "postgresql":
                start: Any = func.now()
                end: Any = func.now() + literal_column(f"interval '{int(expiring_within_s)} seconds'")
            else:
                start = utcnow()
                end = start + timedelta(seconds=expiring_within_s)
            at_risk: Any = (select(literal_column("'x'"), literal_column(f"'{CacheStatus.PENDING.value}'"),
                              literal_column("''"), func.count())
                       .where(_t.c.status == literal_column(f"'{CacheStatus.PENDING.value}'"),
                              _t.c.source_expires_at >= start, _t.c.source_expires_at < end))
            stmt = stmt.union_all(at_risk)
        by_status = {s: 0 for s in CacheStatus}
        failed_by_kind: dict[str, int] = {}
        expiring_n = 0
        async with self._tx(single_statement=True) as conn:
            rows = (await conn.execute(stmt)).all()
        for part, status, kind, n in rows:
            n = int(n or 0)
            if part == "x":
                expiring_n = n
                continue
            by_status[CacheStatus(status)] += n
            if status == CacheStatus.FAILED.value and n:
                failed_by_kind[kind or "unknown"] = failed_by_kind.get(kind or "unknown", 0) + n
        return by_status, failed_by_kind, expiring_n

    # ---- maintenance ---------------------------------------------------------------------

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
        """FAILED -> PENDING for up to `limit` assets; returns (id, url) of those moved.

        `attempts` starts again at 0: it counts the attempts of this try of the asset, which is
        what the dashboard and `get_asset` show, not every attempt since the asset was created.
        """
        async with self._tx() as conn:
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
        async with self._tx(single_statement=True) as conn:
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
        async with self._tx(single_statement=True) as conn:
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
        async with self._tx(single_statement=True) as conn:
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
        async with self._tx(single_statement=True) as conn:
            keys = list((await conn.execute(stmt)).scalars().all())
        return len(keys), {k for k in keys if k}

    async def converge_copies(self, sha256: str, size_bytes: int) -> tuple[str | None, set[str]]:
        """Points every CACHED asset with these bytes at one object, the one with the smallest key;
        returns that key and the keys no longer pointed at (surplus objects unless a row holds them).

        Two downloads of the same bytes that finish at the same moment each store their own copy:
        neither sees the other's uncommitted row when it records its object. Each calls this after
        recording, so whichever runs last sees both and leaves one. The rows are locked (FOR
        UPDATE on PostgreSQL, in the one statement that also moves them), so a cleanup deleting
        one of them either waits or is not seen. SQLite runs writers one at a time.
        """
        if self.engine.dialect.name == "postgresql":
            row = await self._one(_CONVERGE_PG, {"b_sha256": sha256, "b_size": size_bytes,
                                                 "b_cached": CacheStatus.CACHED.value})
            return (None, set()) if row is None else (row["winner"], set(row["surplus"]))
        stmt = (select(_t.c.id, _t.c.cache_key)
                .where(_t.c.sha256 == sha256, _t.c.size_bytes == size_bytes,
                       _t.c.status == CacheStatus.CACHED.value, _t.c.cache_key.is_not(None)))
        async with self._tx() as conn:
            rows = (await conn.execute(stmt)).all()
            keys = {r.cache_key for r in rows}
            if len(keys) < 2:
                return (next(iter(keys)) if keys else None), set()
            winner = min(keys)
            await conn.execute(update(_t).where(_t.c.id.in_([r.id for r in rows if r.cache_key != winner]),
                                                _t.c.status == CacheStatus.CACHED.value)
                               .values(cache_key=winner))
        return winner, keys - {winner}

    async def holders_cached_near(self, sha256: str, size_bytes: int, around: datetime, within_s: float,
                                  limit: int) -> list[uuid.UUID]:
        """The CACHED assets with these bytes recorded within `within_s` of `around` (at most `limit`):
        the downloads that may have recorded a copy of them at the same moment as the one at `around`."""
        window = timedelta(seconds=within_s)
        stmt = (select(_t.c.id)
                .where(_t.c.sha256 == sha256, _t.c.size_bytes == size_bytes, _t.c.status == CacheStatus.CACHED.value,
                       _t.c.cached_at.between(around - window, around + window))
                .limit(limit))
        async with self._tx(single_statement=True) as conn:
            return list((await conn.execute(stmt)).scalars().all())

    async def keys_in_use(self, keys: Iterable[str]) -> set[str]:
        """The keys among `keys` that some asset row holds (in any status)."""
        keys = list(set(keys))
        if not keys:
            return set()
        stmt = select(_t.c.cache_key).where(_t.c.cache_key.in_(keys)).distinct()
        async with self._tx(single_statement=True) as conn:
            return set((await conn.execute(stmt)).scalars().all())

    async def key_counts(self, keys: Iterable[str]) -> dict[str, int]:
        """How many asset rows hold each of `keys`."""
        keys = list(set(keys))
        if not keys:
            return {}
        stmt = select(_t.c.cache_key, func.count()).where(_t.c.cache_key.in_(keys)).group_by(_t.c.cache_key)
        async with self._tx(single_statement=True) as conn:
            return {k: int(n) for k, n in (await conn.execute(stmt)).all()}

    # ---- the usage report ----------------------------------------------------------------

    def _host_of_url(self) -> ColumnElement[Any]:
        """The authority of original_url (host, and port if any), in lower case."""
        url = _t.c.original_url
        if self.engine.dialect.name == "postgresql":
            return func.lower(func.split_part(url, "/", 3))
        rest = func.substr(url, func.instr(url, "//") + 2)
        return func.lower(func.substr(rest, 1, func.instr(rest.op("||")("/"), "/") - 1))

    async def usage_rows(self, now: datetime) -> dict[str, list[tuple[Any, ...]]]:
        """The figures of the usage report, one grouped query each, in one transaction:
        status (n, bytes, repeat requests), content type, host and age (n, bytes), and the stored
        objects (number, bytes, each object once)."""
        size = func.coalesce(func.sum(_t.c.size_bytes), 0)
        age = case((_t.c.last_requested_at >= now - timedelta(days=1), "0-1d"),
                   (_t.c.last_requested_at >= now - timedelta(days=7), "1-7d"),
                   (_t.c.last_requested_at >= now - timedelta(days=30), "7-30d"), else_="older")
        host = self._host_of_url()
        cached = _t.c.status == CacheStatus.CACHED.value
        objects = (select(_t.c.cache_key, func.max(_t.c.size_bytes).label("size"))
                   .where(cached, _t.c.cache_key.is_not(None)).group_by(_t.c.cache_key).subquery())
        queries: dict[str, Any] = {
            "status": select(_t.c.status, func.count(), size, func.coalesce(func.sum(_t.c.requests - 1), 0))
            .group_by(_t.c.status),
            "content_type": select(_t.c.content_type, func.count(), size).where(cached).group_by(_t.c.content_type),
            "host": select(host, func.count(), size).group_by(host),
            "age": select(age, func.count(), size).group_by(age),
            "objects": select(func.count(), func.coalesce(func.sum(objects.c.size), 0)).select_from(objects),
        }
        async with self._tx() as conn:
            return {name: [tuple(r) for r in (await conn.execute(q)).all()] for name, q in queries.items()}

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

    async def dedup_savings(self) -> tuple[int, int]:
        """(repeat requests answered by an existing asset, bytes of CACHED assets counted per asset)."""
        # From the counters the triggers keep (migration 0008): a few rows, not a pass over the table.
        logical = func.sum(case((_c.c.status == CacheStatus.CACHED.value, _c.c.logical_bytes), else_=0))
        stmt = select(func.coalesce(func.sum(_c.c.requests) - func.sum(_c.c.assets), 0), func.coalesce(logical, 0))
        async with self._tx(single_statement=True) as conn:
            row = (await conn.execute(stmt)).one()
        return int(row[0] or 0), int(row[1] or 0)

    async def stored_bytes(self) -> int:
        """The total size of the stored objects of CACHED assets, each object counted once however
        many assets share it: from the counters the triggers keep (migration 0008)."""
        stmt = select(func.coalesce(func.sum(_c.c.bytes), 0)).where(_c.c.status == CacheStatus.CACHED.value)
        async with self._tx(single_statement=True) as conn:
            return int((await conn.execute(stmt)).scalar() or 0)
