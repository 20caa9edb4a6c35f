"""asset counts kept by triggers, and the indexes the dashboard reads at a million rows

`cache_stats()` and the dashboard used to count the whole table (`count(*) ... GROUP BY status`),
which takes a second at a million assets. Triggers now keep the counts (and the bytes of CACHED
assets) in `cache_asset_counts` in the same statement that changes a row, so the figures are exact
under any concurrency and reading them costs a few rows. On PostgreSQL each change lands in one
of 16 shards picked at random, so concurrent workers do not queue on one counter row; the shards
are summed on read.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SHARDS = 16

# error_kind is only counted for FAILED assets ('' otherwise): a retried DOWNLOADING asset changes
# its last error on every attempt, and those changes should not touch the counters at all.
_PG_FUNCTION = f"""
CREATE FUNCTION cache_assets_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_shard smallint := floor(random() * {SHARDS});
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO cache_asset_counts AS c (status, error_kind, shard, assets, bytes)
        VALUES (OLD.status, CASE WHEN OLD.status = 'FAILED' THEN COALESCE(OLD.error_kind, 'unknown') ELSE '' END,
                v_shard, -1, -CASE WHEN OLD.status = 'CACHED' THEN COALESCE(OLD.size_bytes, 0) ELSE 0 END)
        ON CONFLICT (status, error_kind, shard)
        DO UPDATE SET assets = c.assets + EXCLUDED.assets, bytes = c.bytes + EXCLUDED.bytes;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        INSERT INTO cache_asset_counts AS c (status, error_kind, shard, assets, bytes)
        VALUES (NEW.status, CASE WHEN NEW.status = 'FAILED' THEN COALESCE(NEW.error_kind, 'unknown') ELSE '' END,
                v_shard, 1, CASE WHEN NEW.status = 'CACHED' THEN COALESCE(NEW.size_bytes, 0) ELSE 0 END)
        ON CONFLICT (status, error_kind, shard)
        DO UPDATE SET assets = c.assets + EXCLUDED.assets, bytes = c.bytes + EXCLUDED.bytes;
    END IF;
    RETURN NULL;
END $$
"""
_PG_TRIGGERS = [
    """CREATE TRIGGER cache_assets_count_ins AFTER INSERT ON cache_assets
       FOR EACH ROW EXECUTE FUNCTION cache_assets_count()""",
    """CREATE TRIGGER cache_assets_count_del AFTER DELETE ON cache_assets
       FOR EACH ROW EXECUTE FUNCTION cache_assets_count()""",
    """CREATE TRIGGER cache_assets_count_upd AFTER UPDATE OF status, error_kind, size_bytes ON cache_assets
       FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                          OR (NEW.status = 'FAILED' AND OLD.error_kind IS DISTINCT FROM NEW.error_kind)
                          OR (NEW.status = 'CACHED' AND OLD.size_bytes IS DISTINCT FROM NEW.size_bytes))
       EXECUTE FUNCTION cache_assets_count()""",
]


def _sqlite_change(row: str, sign: str) -> str:
    """Statements that add `sign`1 asset (and its bytes) of row OLD or NEW to its counter row."""
    kind = f"CASE WHEN {row}.status = 'FAILED' THEN COALESCE({row}.error_kind, 'unknown') ELSE '' END"
    size = f"CASE WHEN {row}.status = 'CACHED' THEN COALESCE({row}.size_bytes, 0) ELSE 0 END"
    return (f"INSERT OR IGNORE INTO cache_asset_counts (status, error_kind, shard, assets, bytes) "
            f"VALUES ({row}.status, {kind}, 0, 0, 0); "
            f"UPDATE cache_asset_counts SET assets = assets {sign} 1, bytes = bytes {sign} {size} "
            f"WHERE status = {row}.status AND error_kind = {kind} AND shard = 0;")


# SQLite has one writer at a time, so one shard is enough there.
_SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER cache_assets_count_ins AFTER INSERT ON cache_assets
        BEGIN {_sqlite_change("NEW", "+")} END""",
    f"""CREATE TRIGGER cache_assets_count_del AFTER DELETE ON cache_assets
        BEGIN {_sqlite_change("OLD", "-")} END""",
    f"""CREATE TRIGGER cache_assets_count_upd AFTER UPDATE OF status, error_kind, size_bytes ON cache_assets
        WHEN OLD.status IS NOT NEW.status
             OR (NEW.status = 'FAILED' AND OLD.error_kind IS NOT NEW.error_kind)
             OR (NEW.status = 'CACHED' AND OLD.size_bytes IS NOT NEW.size_bytes)
        BEGIN {_sqlite_change("OLD", "-")} {_sqlite_change("NEW", "+")} END""",
]

_BACKFILL = """
INSERT INTO cache_asset_counts (status, error_kind, shard, assets, bytes)
SELECT status, CASE WHEN status = 'FAILED' THEN COALESCE(error_kind, 'unknown') ELSE '' END, 0, count(*),
       COALESCE(sum(CASE WHEN status = 'CACHED' THEN COALESCE(size_bytes, 0) ELSE 0 END), 0)
FROM cache_assets
GROUP BY status, CASE WHEN status = 'FAILED' THEN COALESCE(error_kind, 'unknown') ELSE '' END
"""


def upgrade() -> None:
    op.create_table(
        "cache_asset_counts",
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_kind", sa.String(length=32), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("assets", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("status", "error_kind", "shard", name="pk_cache_asset_counts"),
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # Counting and installing the triggers in one locked step: no change slips in between.
        op.execute("LOCK TABLE cache_assets IN SHARE ROW EXCLUSIVE MODE")
        op.execute(_BACKFILL)
        op.execute(_PG_FUNCTION)
        for statement in _PG_TRIGGERS:
            op.execute(statement)
    else:
        op.execute(_BACKFILL)
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)
    # The dashboard's reads: the newest failures, and what was cached in the last minutes.
    op.create_index("ix_cache_assets_status_updated_at", "cache_assets", ["status", "updated_at"])
    op.create_index("ix_cache_assets_cached_at", "cache_assets", ["cached_at"])


def downgrade() -> None:
    op.drop_index("ix_cache_assets_cached_at", table_name="cache_assets")
    op.drop_index("ix_cache_assets_status_updated_at", table_name="cache_assets")
    for name in ("cache_assets_count_ins", "cache_assets_count_del", "cache_assets_count_upd"):
        if op.get_bind().dialect.name == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON cache_assets")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS cache_assets_count()")
    op.drop_table("cache_asset_counts")
