"""The statements on cache_assets that run for every download, built once, and the pieces the
asset queries share: only their parameters change from one execution to the next."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from sqlalchemy import (
    BigInteger,
    String,
    Text,
    Uuid,
    any_,
    bindparam,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import ColumnElement

from mediacache.db.columns import UTCDateTime
from mediacache.db.models import ASSETS as _t
from mediacache.db.models import LIVE_PREDICATE
from mediacache.db.models import OUTBOX as _o
from mediacache.domain import TRANSITIONS, CacheStatus
from mediacache.events.payload import ASSET_CACHED
from mediacache.records import AssetRecord

STATUS_BY_VALUE = {s.value: s for s in CacheStatus}
# `derivatives` is a list read from its own table (db.media_repository), not a column.
RECORD_COLUMNS = [_t.c[f.name] for f in fields(AssetRecord) if f.name != "derivatives"]


def status_in(*statuses: CacheStatus) -> ColumnElement[bool]:
    # Equalities rather than IN: an IN list is an "expanding" parameter that SQLAlchemy
    # re-renders on every execution, and these statements run for every download.
    return or_(*(_t.c.status == s.value for s in statuses))


NOW = bindparam("b_now", type_=UTCDateTime())
CLAIM = (
    update(_t)
    .where(_t.c.id == bindparam("b_id"), status_in(*TRANSITIONS[CacheStatus.DOWNLOADING]),
           or_(_t.c.status == CacheStatus.PENDING.value, _t.c.lease_until.is_(None), _t.c.lease_until < NOW))
    .values(status=CacheStatus.DOWNLOADING.value, attempts=_t.c.attempts + 1, lease_token=bindparam("b_token"),
            lease_until=bindparam("b_until", type_=UTCDateTime()), updated_at=NOW)
    .returning(_t.c.original_url, _t.c.attempts, _t.c.created_at)
)
def mark_cached_statement(dialect: str, *, share: bool) -> Any:
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
               status_in(*TRANSITIONS[CacheStatus.CACHED]))
        .values(status=CacheStatus.CACHED.value, cache_key=key, content_type=bindparam("b_type"),
                size_bytes=bindparam("b_size"), sha256=bindparam("b_sha256"), error=None, error_kind=None,
                lease_token=None, lease_until=None, cached_at=NOW, updated_at=NOW)
        .returning(_t.c.cache_key)
    )


# mark_cached with sharing on PostgreSQL: the function of migration 0011, its UPDATE built as
# mark_cached_statement's, after a lock on the bytes. It returns NULL when the lease was lost.
MARK_CACHED_IN_TURN_PG = select(func.mediacache_mark_cached(
    bindparam("b_id", type_=Uuid()), bindparam("b_token", type_=String()), bindparam("b_key", type_=Text()),
    bindparam("b_type", type_=String()), bindparam("b_size", type_=BigInteger()),
    bindparam("b_sha256", type_=String()), NOW).label("cache_key"))


# URL resolution's one query: one array parameter keeps the statement text (and its prepared
# statement) the same for any number of ids, where an IN list would be compiled and prepared anew.
RESOLVABLES_PG = (select(_t.c.id, _t.c.status, _t.c.cache_key, _t.c.original_url)
                   .where(_t.c.id == any_(bindparam("ids", type_=ARRAY(Uuid)))))


# converge_copies on PostgreSQL in one statement: the holders locked, the winner chosen and the
# others pointed at it, in autocommit. As BEGIN, SELECT ... FOR UPDATE, UPDATE, COMMIT it cost
# every download with deduplication on three round trips instead of one.
CONVERGE_PG = text("""
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


LIVE = text(LIVE_PREDICATE)
LIVE_STATUSES = (CacheStatus.PENDING, CacheStatus.DOWNLOADING, CacheStatus.CACHED)
# A request that lands on an existing asset: it is as young as this request, and one more
# download was saved. Built for one key (the common cache_image) and for many.
HIT_VALUES = {"requests": _t.c.requests + 1, "last_requested_at": NOW}
HIT_ONE = (update(_t).where(_t.c.source_key == bindparam("b_key"), status_in(*LIVE_STATUSES))
            .values(**HIT_VALUES).returning(_t.c.id, _t.c.source_key, _t.c.status, _t.c.original_url))
# The columns of a new PENDING asset as insert_or_find writes them.
PENDING_COLUMNS = ("id", "original_url", "source_key", "status", "attempts", "requests", "created_at", "updated_at",
                    "last_requested_at", "source_expires_at")
RECORD_FAILURE = (
    update(_t)
    .where(_t.c.id == bindparam("b_id"), _t.c.lease_token == bindparam("b_token"),
           _t.c.status == CacheStatus.DOWNLOADING.value)
    .values(status=bindparam("b_status"), error=bindparam("b_error"), error_kind=bindparam("b_kind"),
            lease_token=None, lease_until=None, updated_at=NOW)
)


OUTBOX_COLUMNS = ["event_id", "event_type", "asset_id", "target_url", "payload", "attempts", "created_at",
                   "next_attempt_at"]


def with_outbox_pg(change: Any) -> Any:
    """`change` and the outbox INSERT as one PostgreSQL statement: a data-modifying CTE, so the event
    rows exist exactly when the status change happened, at the cost of no extra round trip."""
    changed = change.returning(_t.c.id).cte("changed")
    targets = func.unnest(bindparam("b_targets", type_=ARRAY(Text()))).table_valued("url").render_derived()
    rows = (select(bindparam("b_event_id", type_=Uuid()), bindparam("b_event_type", type_=Text()), changed.c.id,
                   targets.c.url, bindparam("b_payload", type_=Text()), literal(0), NOW, NOW)
            .select_from(changed).join(targets, true()))
    return insert(_o).from_select(OUTBOX_COLUMNS, rows)


RECORD_FAILURE_PG = with_outbox_pg(RECORD_FAILURE)


def mark_cached_with_outbox_pg(mark_cached: Any) -> Any:
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
                   targets.c.url, body, literal(0), NOW, NOW)
            .select_from(changed).join(targets, true()).where(changed.c.cache_key.is_not(None)))
    queued = insert(_o).from_select(OUTBOX_COLUMNS, rows).returning(_o.c.id).cte("queued")
    # A data-modifying CTE runs whether or not the query reads it; add_cte renders it unreferenced.
    return select(changed.c.cache_key).add_cte(queued)


def record_of(row: Any) -> AssetRecord:
    """An AssetRecord from a row of RECORD_COLUMNS."""
    data = dict(row._mapping)
    data["status"] = CacheStatus(data["status"])
    return AssetRecord(**data)
