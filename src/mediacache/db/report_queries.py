"""The statistics of cache_assets: counts, the usage report, the dashboard's and the metrics' figures."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, case, extract, func, literal_column, select
from sqlalchemy.sql.elements import ColumnElement

from mediacache.db.access import DatabaseAccess
from mediacache.db.asset_sql import RECORD_COLUMNS, record_of
from mediacache.db.columns import utcnow
from mediacache.db.models import ASSET_COUNTS as _c
from mediacache.db.models import ASSETS as _t
from mediacache.domain import CacheStatus
from mediacache.records import AssetRecord


class ReportQueries:
    """Read-only figures, most of them from the counters the triggers keep (migration 0008)."""

    def __init__(self, db: DatabaseAccess) -> None:
        self._db = db

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
            if self._db.dialect == "postgresql":
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
        async with self._db.tx(single_statement=True) as conn:
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

    def _host_of_url(self) -> ColumnElement[Any]:
        """The authority of original_url (host, and port if any), in lower case."""
        url = _t.c.original_url
        if self._db.dialect == "postgresql":
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
        async with self._db.tx() as conn:
            return {name: [tuple(r) for r in (await conn.execute(q)).all()] for name, q in queries.items()}

    async def recent_failures(self, limit: int) -> list[AssetRecord]:
        """FAILED assets, the most recently failed first."""
        stmt = (select(*RECORD_COLUMNS).where(_t.c.status == CacheStatus.FAILED.value)
                .order_by(_t.c.updated_at.desc()).limit(limit))
        async with self._db.tx() as conn:
            return [record_of(r) for r in (await conn.execute(stmt)).all()]

    async def cached_per_bucket(self, since: datetime, bucket_s: int) -> dict[int, int]:
        """Assets cached since `since`, counted per `bucket_s`-second bucket: {bucket start (unix s): n}."""
        # extract('epoch') compiles to strftime('%s') on SQLite and EXTRACT(EPOCH ...) on PostgreSQL;
        # the integer cast and floor division then give the same buckets on both. The divisor is a
        # literal so that PostgreSQL sees the SELECT and GROUP BY expressions as the same one.
        bucket = extract("epoch", _t.c.cached_at).cast(BigInteger) // literal_column(str(int(bucket_s)), BigInteger)
        stmt = (select(bucket.label("bucket"), func.count()).where(_t.c.cached_at >= since)
                .group_by(bucket))
        async with self._db.tx() as conn:
            return {int(b) * bucket_s: int(n) for b, n in (await conn.execute(stmt)).all()}

    async def dedup_savings(self) -> tuple[int, int]:
        """(repeat requests answered by an existing asset, bytes of CACHED assets counted per asset)."""
        # From the counters the triggers keep (migration 0008): a few rows, not a pass over the table.
        logical = func.sum(case((_c.c.status == CacheStatus.CACHED.value, _c.c.logical_bytes), else_=0))
        stmt = select(func.coalesce(func.sum(_c.c.requests) - func.sum(_c.c.assets), 0), func.coalesce(logical, 0))
        async with self._db.tx(single_statement=True) as conn:
            row = (await conn.execute(stmt)).one()
        return int(row[0] or 0), int(row[1] or 0)

    async def stored_bytes(self) -> int:
        """The total size of the stored objects of CACHED assets, each object counted once however
        many assets share it: from the counters the triggers keep (migration 0008)."""
        stmt = select(func.coalesce(func.sum(_c.c.bytes), 0)).where(_c.c.status == CacheStatus.CACHED.value)
        async with self._db.tx(single_statement=True) as conn:
            return int((await conn.execute(stmt)).scalar() or 0)
