"""PostgreSQL counts each statement once, not each row: bulk inserts, cleanups and retries at scale

The row triggers of 0003/0008 ran two upserts (and an index probe) for every changed row: about
1.8 ms a row, so a cleanup of 500,000 assets or a bulk insert of a million spent most of its time
counting. PostgreSQL now counts with statement triggers over the transition tables (`old_rows`,
`new_rows`): one grouped upsert per statement, whatever its row count. SQLite has no statement
triggers and keeps 0008's row triggers; its writes are one at a time anyway.

The bytes of shared objects follow one rule per cache key touched by the statement: with `after`
the CACHED holders the key has once the statement is done, and `net` the holders the statement
added (arrivals minus departures), the key had `after - net` holders before; its bytes count on
when it goes from none to some, and off when it goes from some to none. `after` only has to be
counted up to `net + 1` to decide that, so a popular object with thousands of holders costs a few
index entries. The sharing UPDATE still locks its holder FOR SHARE (see
`AssetRepository.mark_cached`), so a concurrent cleanup cannot take the holder away in between.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""
from __future__ import annotations

import importlib
from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SHARDS = 16
_TRIGGERS = ("cache_assets_count_ins", "cache_assets_count_del", "cache_assets_count_upd")
_KIND = "CASE WHEN {row}.status = 'FAILED' THEN COALESCE({row}.error_kind, 'unknown') ELSE '' END"
_LOGICAL = "CASE WHEN {row}.status = 'CACHED' THEN COALESCE({row}.size_bytes, 0) ELSE 0 END"
_NO_ROWS = "(SELECT * FROM cache_assets WHERE false)"


def _counting(old: str, new: str) -> str:
    """The one statement that adds what `old` rows left and `new` rows brought to the counters."""
    return f"""
    WITH changes AS (
        SELECT o.status, {_KIND.format(row="o")} AS error_kind, -1 AS assets,
               -COALESCE(o.requests, 1) AS requests, -({_LOGICAL.format(row="o")}) AS logical_bytes
        FROM {old} o
        UNION ALL
        SELECT n.status, {_KIND.format(row="n")}, 1, COALESCE(n.requests, 1), {_LOGICAL.format(row="n")}
        FROM {new} n
    ), counted AS (
        SELECT status, error_kind, sum(assets) AS assets, sum(requests) AS requests,
               sum(logical_bytes) AS logical_bytes
        FROM changes GROUP BY status, error_kind
        HAVING sum(assets) <> 0 OR sum(requests) <> 0 OR sum(logical_bytes) <> 0
    ), held AS (
        SELECT cache_key, sum(holder) AS net, max(size) AS size FROM (
            SELECT cache_key, -1 AS holder, COALESCE(size_bytes, 0) AS size FROM {old} o
            WHERE o.status = 'CACHED' AND o.cache_key IS NOT NULL
            UNION ALL
            SELECT cache_key, 1, COALESCE(size_bytes, 0) FROM {new} n
            WHERE n.status = 'CACHED' AND n.cache_key IS NOT NULL) AS moves
        GROUP BY cache_key
    ), objects AS (
        SELECT held.net, held.size, holders.after FROM held CROSS JOIN LATERAL (
            SELECT count(*) AS after FROM (
                SELECT 1 FROM cache_assets h WHERE h.cache_key = held.cache_key AND h.status = 'CACHED'
                LIMIT GREATEST(held.net, 0) + 1) AS found) AS holders
    ), stored AS (
        SELECT COALESCE(sum(size * ((after > 0)::int - ((after - net) > 0)::int)), 0) AS bytes FROM objects
    )
    INSERT INTO cache_asset_counts AS c (status, error_kind, shard, assets, bytes, requests, logical_bytes)
    SELECT * FROM (
        SELECT status, error_kind, v_shard, assets,
               CASE WHEN status = 'CACHED' AND error_kind = '' THEN (SELECT bytes FROM stored) ELSE 0 END,
               requests, logical_bytes
        FROM counted
        UNION ALL
        SELECT 'CACHED', '', v_shard, 0, bytes, 0, 0 FROM stored
        WHERE bytes <> 0 AND NOT EXISTS (SELECT 1 FROM counted WHERE status = 'CACHED' AND error_kind = '')
    ) AS deltas
    -- Counter rows locked in one order by every statement: two writers cannot wait on each other.
    ORDER BY 1, 2
    ON CONFLICT (status, error_kind, shard) DO UPDATE SET
        assets = c.assets + EXCLUDED.assets, bytes = c.bytes + EXCLUDED.bytes,
        requests = c.requests + EXCLUDED.requests, logical_bytes = c.logical_bytes + EXCLUDED.logical_bytes;
    """


def _function(name: str, old: str, new: str) -> str:
    return f"""
CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_shard smallint := floor(random() * {SHARDS});
BEGIN
    {_counting(old, new)}
    RETURN NULL;
END $$
"""


_FUNCTIONS = [
    _function("cache_assets_count_inserted", _NO_ROWS, "new_rows"),
    _function("cache_assets_count_deleted", "old_rows", _NO_ROWS),
    _function("cache_assets_count_updated", "old_rows", "new_rows"),
]
_STATEMENT_TRIGGERS = [
    "CREATE TRIGGER cache_assets_count_ins AFTER INSERT ON cache_assets REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION cache_assets_count_inserted()",
    "CREATE TRIGGER cache_assets_count_del AFTER DELETE ON cache_assets REFERENCING OLD TABLE AS old_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION cache_assets_count_deleted()",
    # A statement trigger takes no column list together with transition tables, and no WHEN: rows
    # whose counted columns did not change cancel out in the grouping (+1 and -1 in one group).
    "CREATE TRIGGER cache_assets_count_upd AFTER UPDATE ON cache_assets "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION cache_assets_count_updated()",
]


def upgrade() -> None:
    # The holder lookups ask for (cache_key, status = 'CACHED'): with both in one index the planner
    # takes it even on a table whose statistics are stale (a fresh table filled by one INSERT), where
    # it picked the status index and read every CACHED row per key.
    op.drop_index("ix_cache_assets_cache_key", table_name="cache_assets")
    op.create_index("ix_cache_assets_cache_key_status", "cache_assets", ["cache_key", "status"])
    if op.get_bind().dialect.name != "postgresql":
        return
    # No change between dropping the row triggers and creating the statement triggers goes uncounted.
    op.execute("LOCK TABLE cache_assets IN SHARE ROW EXCLUSIVE MODE")
    for statement in _FUNCTIONS:
        op.execute(statement)
    for name in _TRIGGERS:
        op.execute(f"DROP TRIGGER {name} ON cache_assets")
    for statement in _STATEMENT_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    op.drop_index("ix_cache_assets_cache_key_status", table_name="cache_assets")
    op.create_index("ix_cache_assets_cache_key", "cache_assets", ["cache_key"])
    if op.get_bind().dialect.name != "postgresql":
        return
    rows = importlib.import_module("mediacache.migrations.versions.0008_object_bytes")
    op.execute("LOCK TABLE cache_assets IN SHARE ROW EXCLUSIVE MODE")
    for name in _TRIGGERS:
        op.execute(f"DROP TRIGGER {name} ON cache_assets")
    for statement in rows._PG_TRIGGERS:
        op.execute(statement)
    op.execute(rows._PG_UPDATE_TRIGGER)
    for name in ("cache_assets_count_inserted", "cache_assets_count_deleted", "cache_assets_count_updated"):
        op.execute(f"DROP FUNCTION {name}()")
