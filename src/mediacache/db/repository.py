"""The queries on cache_assets of enqueueing and downloading; each status change is one conditional UPDATE."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

from sqlalchemy import and_, bindparam, delete, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from mediacache.db.access import DatabaseAccess
from mediacache.db.asset_sql import (
    CLAIM,
    CONVERGE_PG,
    HIT_ONE,
    HIT_VALUES,
    LIVE,
    LIVE_STATUSES,
    MARK_CACHED_IN_TURN_PG,
    PENDING_COLUMNS,
    RECORD_COLUMNS,
    RECORD_FAILURE,
    RECORD_FAILURE_PG,
    RESOLVABLES_PG,
    STATUS_BY_VALUE,
    mark_cached_statement,
    mark_cached_with_outbox_pg,
    record_of,
    status_in,
)
from mediacache.db.columns import utcnow
from mediacache.db.driver import DriverStatement, fetch_row, fetch_rows
from mediacache.db.models import ASSETS as _t
from mediacache.db.models import OUTBOX as _o
from mediacache.db.report_queries import ReportQueries
from mediacache.db.upkeep_queries import UpkeepQueries
from mediacache.domain import CacheStatus
from mediacache.errors import DatabaseError
from mediacache.events.outbox import outbox_rows
from mediacache.events.payload import Event, asset_event, split_at, with_body
from mediacache.fetching.expiry import expires_later, link_expiry
from mediacache.records import AssetRecord

# Stands in for the cache_key in an asset.cached body until the statement knows the key.
_KEY_IN_BODY = f"mediacache-key-{uuid.uuid4().hex}"
# How many rounds of insert-or-find before giving up: a round fails only when the live asset
# found by the insert settled as FAILED or was cleaned up before the next statement.
_ENQUEUE_ROUNDS = 5


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


@dataclass(frozen=True, slots=True)
class Request:
    """One URL to cache: a fresh id to use if no live asset has its source key."""

    new_id: uuid.UUID
    url: str
    source_key: str


class AssetRepository:
    """The asset rows: enqueue, the worker's transitions and the reads of the hot path here; the
    maintenance queries in `upkeep`, the statistics in `reports`."""

    def __init__(self, engine: AsyncEngine, display_url: str = "the database",
                 webhook_targets: Sequence[str] = (), *, content_dedup: bool = True) -> None:
        self.db = DatabaseAccess(engine, display_url)
        self.upkeep = UpkeepQueries(self.db)
        self.reports = ReportQueries(self.db)
        # Receivers of the events of final outcomes; with none, no outbox row is written at all.
        self.webhook_targets = list(webhook_targets)
        dialect = engine.dialect.name
        self.content_dedup = content_dedup
        # On PostgreSQL, downloads of the same bytes record themselves one after the other (see
        # migration 0011): the later one always takes the earlier one's object, so there are never
        # two copies to merge after recording.
        self.records_in_turn = content_dedup and dialect == "postgresql"
        self._mark_cached = (MARK_CACHED_IN_TURN_PG if self.records_in_turn
                             else mark_cached_statement(dialect, share=content_dedup))
        self._mark_cached_pg = (mark_cached_with_outbox_pg(self._mark_cached) if dialect == "postgresql"
                                else None)
        ins: Any = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_t)
        # The conflict target names the partial unique index by its column and predicate, so two
        # requests for one source key (in any process) end with one row and no error: the loser
        # inserts nothing and finds the winner with the next statement.
        self._insert_live = (ins.on_conflict_do_nothing(index_elements=[_t.c.source_key], index_where=LIVE)
                             .returning(_t.c.id, _t.c.source_key))
        # cache_image's one row, with its columns named, so that it can be compiled once for the driver.
        self._insert_one = self._insert_live.values({name: bindparam(name, type_=_t.c[name].type)
                                                     for name in PENDING_COLUMNS})
        # On PostgreSQL the statements of every download go through asyncpg itself (db/driver.py).
        self._driver: dict[Any, DriverStatement] = (
            {stmt: DriverStatement.of(stmt, engine.dialect) for stmt in (
                CLAIM, self._mark_cached, self._mark_cached_pg, CONVERGE_PG, RESOLVABLES_PG,
                self._insert_one)}
            if dialect == "postgresql" else {})

    async def _one(self, statement: Any, params: dict[str, Any]) -> Mapping[str, Any] | None:
        """The first row of one statement run on its own, by column name; through asyncpg directly
        for the statements compiled for it."""
        compiled = self._driver.get(statement)
        if compiled is not None:
            return await fetch_row(self.db.autocommit, self.db.display_url, compiled, params)
        async with self.db.tx(single_statement=True) as conn:
            row = (await conn.execute(statement, params)).first()
        return None if row is None else cast(Mapping[str, Any], row._mapping)

    @property
    def display_url(self) -> str:
        """The database as error messages name it (its URL without the password)."""
        return self.db.display_url

    # ---- enqueue -------------------------------------------------------------------------

    async def insert_pending(self, items: Sequence[tuple[uuid.UUID, str]]) -> None:
        now = utcnow()
        rows = [{"id": i, "original_url": u, "status": CacheStatus.PENDING.value, "attempts": 0,
                 "created_at": now, "updated_at": now, "last_requested_at": now,
                 "source_expires_at": link_expiry(u)} for i, u in items]
        async with self.db.tx(single_statement=len(rows) == 1) as conn:
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
                async with self.db.tx(single_statement=True) as conn:
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
            raise DatabaseError(f"{self.db.display_url}: could not settle an asset for "
                                f"{todo[0].source_key[:200]!r} after {_ENQUEUE_ROUNDS} rounds; try again")
        return found, created

    async def _hit(self, keys: Sequence[str], now: datetime) -> dict[str, tuple[uuid.UUID, str, str]]:
        if len(keys) == 1:
            stmt, params = HIT_ONE, {"b_key": keys[0], "b_now": now}
        else:
            stmt = (update(_t).where(_t.c.source_key.in_(list(keys)), status_in(*LIVE_STATUSES))
                    .values(**HIT_VALUES)
                    .returning(_t.c.id, _t.c.source_key, _t.c.status, _t.c.original_url))
            params = {"b_now": now}
        async with self.db.tx(single_statement=True) as conn:
            return {r.source_key: (r.id, r.status, r.original_url) for r in (await conn.execute(stmt, params)).all()}

    async def _take_fresher_links(self, changes: Sequence[tuple[uuid.UUID, str, str]], now: datetime) -> None:
        """Compare-and-set per asset: only while the asset still waits and still has the old link."""
        waiting = [CacheStatus.PENDING.value, CacheStatus.DOWNLOADING.value]
        async with self.db.tx() as conn:
            for asset_id, old, new in changes:
                await conn.execute(update(_t).where(_t.c.id == asset_id, _t.c.original_url == old,
                                                    _t.c.status.in_(waiting))
                                   .values(original_url=new, source_expires_at=link_expiry(new), updated_at=now))

    async def delete_ids(self, ids: Iterable[uuid.UUID]) -> int:
        ids = list(ids)
        if not ids:
            return 0
        async with self.db.tx(single_statement=True) as conn:
            result = await conn.execute(delete(_t).where(_t.c.id.in_(ids)))
            return int(result.rowcount or 0)

    # ---- the worker's transitions --------------------------------------------------------

    async def claim(self, asset_id: uuid.UUID, token: str, lease_s: float) -> Claim | None:
        """PENDING (or DOWNLOADING with no live lease) -> DOWNLOADING, held by `token`.

        Returns None when another worker holds a live lease or the asset is no longer waiting.
        """
        now = utcnow()
        params = {"b_id": asset_id, "b_now": now, "b_token": token, "b_until": now + timedelta(seconds=lease_s)}
        row = await self._one(CLAIM, params)
        return None if row is None else Claim(asset_id, token, row["original_url"], row["attempts"],
                                              row["created_at"])

    async def renew_lease(self, asset_id: uuid.UUID, token: str, lease_s: float) -> bool:
        now = utcnow()
        stmt = (update(_t).where(_t.c.id == asset_id, _t.c.lease_token == token,
                                 _t.c.status == CacheStatus.DOWNLOADING.value)
                .values(lease_until=now + timedelta(seconds=lease_s)))
        async with self.db.tx(single_statement=True) as conn:
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
        async with self.db.tx() as conn:
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
            async with self.db.tx(single_statement=True) as conn:
                return bool((await conn.execute(RECORD_FAILURE, params)).rowcount)
        after = AssetRecord(id=claim.asset_id, original_url=claim.original_url, status=CacheStatus.FAILED,
                            cache_key=None, content_type=None, size_bytes=None, sha256=None,
                            attempts=claim.attempts, error=error[:4000], error_kind=error_kind,
                            created_at=claim.created_at, updated_at=now, cached_at=None)
        return await self._change_with_event(RECORD_FAILURE, RECORD_FAILURE_PG, params,
                                             asset_event(after, now=now))

    async def _change_with_event(self, change: Any, change_pg: Any, params: dict[str, Any], event: Event) -> bool:
        """Runs the status change and, only if it happened, writes `event` for every webhook target."""
        if self.db.dialect == "postgresql":
            pg_params = {**params, "b_targets": self.webhook_targets, "b_event_id": event.id,
                         "b_event_type": event.type, "b_payload": event.body}
            async with self.db.tx(single_statement=True) as conn:
                return bool((await conn.execute(change_pg, pg_params)).rowcount)
        # SQLite has no data-modifying CTEs: one transaction with both statements.
        async with self.db.tx() as conn:
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
                       or_(status_in(CacheStatus.PENDING, CacheStatus.FAILED),
                           and_(_t.c.status == CacheStatus.DOWNLOADING.value,
                                or_(_t.c.lease_until.is_(None), _t.c.lease_until < now))))
                .values(status=CacheStatus.PENDING.value, original_url=url, source_expires_at=link_expiry(url),
                        attempts=0, error=None, error_kind=None, lease_token=None, lease_until=None,
                        updated_at=now))
        async with self.db.tx(single_statement=True) as conn:
            return bool((await conn.execute(stmt)).rowcount)

    async def status_of(self, asset_id: uuid.UUID) -> tuple[CacheStatus, datetime | None] | None:
        """The status and the lease end of an asset, or None when it does not exist."""
        async with self.db.tx(single_statement=True) as conn:
            row = (await conn.execute(select(_t.c.status, _t.c.lease_until).where(_t.c.id == asset_id))).first()
        return None if row is None else (CacheStatus(row.status), row.lease_until)

    async def failed_at(self, asset_id: uuid.UUID) -> datetime | None:
        """When a FAILED asset failed, or None when it is not FAILED.

        `updated_at` is the time of the failure: on a FAILED asset only transitions write it.
        """
        stmt = select(_t.c.updated_at).where(_t.c.id == asset_id, _t.c.status == CacheStatus.FAILED.value)
        async with self.db.tx(single_statement=True) as conn:
            return cast(datetime | None, (await conn.execute(stmt)).scalar_one_or_none())

    async def reopen_failed(self, asset_id: uuid.UUID) -> bool:
        """FAILED -> PENDING for one asset, a retry asked for through the queue; `attempts` is kept."""
        stmt = (update(_t).where(_t.c.id == asset_id, _t.c.status == CacheStatus.FAILED.value)
                .values(status=CacheStatus.PENDING.value, error=None, error_kind=None, updated_at=utcnow()))
        async with self.db.tx(single_statement=True) as conn:
            return bool((await conn.execute(stmt)).rowcount)

    # ---- reads ---------------------------------------------------------------------------

    async def get(self, asset_id: uuid.UUID) -> AssetRecord | None:
        async with self.db.tx(single_statement=True) as conn:
            row = (await conn.execute(select(*RECORD_COLUMNS).where(_t.c.id == asset_id))).first()
        return None if row is None else record_of(row)

    async def get_many(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, AssetRecord]:
        if not ids:
            return {}
        async with self.db.tx(single_statement=True) as conn:
            rows = (await conn.execute(select(*RECORD_COLUMNS).where(_t.c.id.in_(list(ids))))).all()
        return {r.id: record_of(r) for r in rows}

    async def newest_cached_keys(self, limit: int) -> list[str]:
        """The storage keys of the `limit` most recently cached assets (for the placement check)."""
        stmt = (select(_t.c.cache_key).where(_t.c.status == CacheStatus.CACHED.value, _t.c.cache_key.is_not(None))
                .order_by(_t.c.cached_at.desc()).limit(limit))
        async with self.db.tx(single_statement=True) as conn:
            return [str(key) for key in (await conn.execute(stmt)).scalars()]

    async def resolvables(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Resolvable]:
        """What URL resolution needs for many ids, in one query."""
        if not ids:
            return {}
        status_of = STATUS_BY_VALUE
        compiled = self._driver.get(RESOLVABLES_PG)
        if compiled is not None:
            found = await fetch_rows(self.db.autocommit, self.db.display_url, compiled, {"ids": list(set(ids))})
            # asyncpg's UUIDs hash and compare as uuid.UUID does, so they key the map as they are.
            return {r[0]: Resolvable(r[0], status_of[r[1]], r[2], r[3]) for r in found}
        stmt = select(_t.c.id, _t.c.status, _t.c.cache_key, _t.c.original_url).where(_t.c.id.in_(set(ids)))
        async with self.db.tx(single_statement=True) as conn:
            rows = (await conn.execute(stmt)).all()
        return {r.id: Resolvable(r.id, status_of[r.status], r.cache_key, r.original_url) for r in rows}

    # ---- copies of the same bytes --------------------------------------------------------

    async def converge_copies(self, sha256: str, size_bytes: int) -> tuple[str | None, set[str]]:
        """Points every CACHED asset with these bytes at one object, the one with the smallest key;
        returns that key and the keys no longer pointed at (surplus objects unless a row holds them).

        Two downloads of the same bytes that finish at the same moment each store their own copy:
        neither sees the other's uncommitted row when it records its object. Each calls this after
        recording, so whichever runs last sees both and leaves one. The rows are locked (FOR
        UPDATE on PostgreSQL, in the one statement that also moves them), so a cleanup deleting
        one of them either waits or is not seen. SQLite runs writers one at a time.
        """
        if self.db.dialect == "postgresql":
            row = await self._one(CONVERGE_PG, {"b_sha256": sha256, "b_size": size_bytes,
                                                 "b_cached": CacheStatus.CACHED.value})
            return (None, set()) if row is None else (row["winner"], set(row["surplus"]))
        stmt = (select(_t.c.id, _t.c.cache_key)
                .where(_t.c.sha256 == sha256, _t.c.size_bytes == size_bytes,
                       _t.c.status == CacheStatus.CACHED.value, _t.c.cache_key.is_not(None)))
        async with self.db.tx() as conn:
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
        async with self.db.tx(single_statement=True) as conn:
            return list((await conn.execute(stmt)).scalars().all())

    async def keys_in_use(self, keys: Iterable[str]) -> set[str]:
        """The keys among `keys` that some asset row holds (in any status)."""
        keys = list(set(keys))
        if not keys:
            return set()
        stmt = select(_t.c.cache_key).where(_t.c.cache_key.in_(keys)).distinct()
        async with self.db.tx(single_statement=True) as conn:
            return set((await conn.execute(stmt)).scalars().all())
