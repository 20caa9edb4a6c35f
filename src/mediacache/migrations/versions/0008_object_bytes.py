"""stored bytes count each object once, however many assets share it

With content deduplication (0006) several CACHED assets can point at one object. The counters of
0003 added every asset's size, so `stored_bytes()` counted a shared object once per asset. Now an
object's bytes are added when its key gets its first CACHED holder and taken away when its last
holder leaves (an index lookup on cache_key in the same trigger), so the counter says what the
bucket holds. The lookups leave out the row being changed and see the rows changed before it in
the same statement: SQLite runs row triggers as each row changes, and on PostgreSQL the triggers
become BEFORE triggers for updates and deletes for that reason (an AFTER trigger sees the whole
statement done, so a DELETE of every holder of one object would take its bytes off once per
holder). Inserts keep an AFTER trigger: a BEFORE INSERT trigger fires for rows that ON CONFLICT
DO NOTHING then leaves out. The sharing
UPDATE locks the holder row FOR SHARE (see `AssetRepository.mark_cached`), so a cleanup deleting
the holder while a download shares it still counts the object exactly once.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SHARDS = 16
_KIND = "CASE WHEN {row}.status = 'FAILED' THEN COALESCE({row}.error_kind, 'unknown') ELSE '' END"
# The object of a row leaving CACHED (or leaving a key) counts off only when no CACHED row holds
# its key any more; the object of a row arriving counts on only when no other CACHED row held it.
_OLD_BYTES = ("CASE WHEN OLD.status = 'CACHED' AND OLD.cache_key IS NOT NULL AND NOT EXISTS ("
              "SELECT 1 FROM cache_assets h WHERE h.cache_key = OLD.cache_key AND h.status = 'CACHED' "
              "AND h.id <> OLD.id) THEN COALESCE(OLD.size_bytes, 0) ELSE 0 END")
_NEW_BYTES = ("CASE WHEN NEW.status = 'CACHED' AND NEW.cache_key IS NOT NULL AND NOT EXISTS ("
              "SELECT 1 FROM cache_assets h WHERE h.cache_key = NEW.cache_key AND h.status = 'CACHED' "
              "AND h.id <> NEW.id) THEN COALESCE(NEW.size_bytes, 0) ELSE 0 END")

# Per asset, for the usage figures deduplication saved: its requests (1 + the repeats it answered)
# and, once CACHED, its size as if it had its own copy.
_LOGICAL = "CASE WHEN {row}.status = 'CACHED' THEN COALESCE({row}.size_bytes, 0) ELSE 0 END"
_ADD = ("assets = c.assets + EXCLUDED.assets, bytes = c.bytes + EXCLUDED.bytes, "
        "requests = c.requests + EXCLUDED.requests, logical_bytes = c.logical_bytes + EXCLUDED.logical_bytes")

_PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION cache_assets_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_shard smallint := floor(random() * {SHARDS});
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO cache_asset_counts AS c (status, error_kind, shard, assets, bytes, requests, logical_bytes)
        VALUES (OLD.status, {_KIND.format(row="OLD")}, v_shard, -1, -({_OLD_BYTES}), -COALESCE(OLD.requests, 1),
                -({_LOGICAL.format(row="OLD")}))
        ON CONFLICT (status, error_kind, shard)
        DO UPDATE SET {_ADD};
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        INSERT INTO cache_asset_counts AS c (status, error_kind, shard, assets, bytes, requests, logical_bytes)
        VALUES (NEW.status, {_KIND.format(row="NEW")}, v_shard, 1, {_NEW_BYTES}, COALESCE(NEW.requests, 1),
                {_LOGICAL.format(row="NEW")})
        ON CONFLICT (status, error_kind, shard)
        DO UPDATE SET {_ADD};
    END IF;
    -- A BEFORE trigger: returning the row lets the change go ahead.
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END $$
"""
_PG_TRIGGERS = [
    # AFTER for inserts: a BEFORE INSERT trigger also fires for the rows that ON CONFLICT DO NOTHING
    # then leaves out (deduplication's enqueue), and would count assets that were never written.
    "CREATE TRIGGER cache_assets_count_ins AFTER INSERT ON cache_assets FOR EACH ROW "
    "EXECUTE FUNCTION cache_assets_count()",
    "CREATE TRIGGER cache_assets_count_del BEFORE DELETE ON cache_assets FOR EACH ROW "
    "EXECUTE FUNCTION cache_assets_count()",
]
_PG_UPDATE_TRIGGER = """
CREATE TRIGGER cache_assets_count_upd BEFORE UPDATE OF status, error_kind, size_bytes, cache_key, requests
ON cache_assets FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.requests IS DISTINCT FROM NEW.requests
                   OR (NEW.status = 'FAILED' AND OLD.error_kind IS DISTINCT FROM NEW.error_kind)
                   OR (NEW.status = 'CACHED' AND (OLD.size_bytes IS DISTINCT FROM NEW.size_bytes
                                                  OR OLD.cache_key IS DISTINCT FROM NEW.cache_key)))
EXECUTE FUNCTION cache_assets_count()
"""


def _sqlite_change(row: str, sign: str, size: str) -> str:
    kind = _KIND.format(row=row)
    return (f"INSERT OR IGNORE INTO cache_asset_counts (status, error_kind, shard, assets, bytes, requests, "
            f"logical_bytes) VALUES ({row}.status, {kind}, 0, 0, 0, 0, 0); "
            f"UPDATE cache_asset_counts SET assets = assets {sign} 1, bytes = bytes {sign} ({size}), "
            f"requests = requests {sign} COALESCE({row}.requests, 1), "
            f"logical_bytes = logical_bytes {sign} ({_LOGICAL.format(row=row)}) "
            f"WHERE status = {row}.status AND error_kind = {kind} AND shard = 0;")


_SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER cache_assets_count_ins AFTER INSERT ON cache_assets
        BEGIN {_sqlite_change("NEW", "+", _NEW_BYTES)} END""",
    f"""CREATE TRIGGER cache_assets_count_del AFTER DELETE ON cache_assets
        BEGIN {_sqlite_change("OLD", "-", _OLD_BYTES)} END""",
    f"""CREATE TRIGGER cache_assets_count_upd AFTER UPDATE OF status, error_kind, size_bytes, cache_key, requests
        ON cache_assets
        WHEN OLD.status IS NOT NEW.status OR OLD.requests IS NOT NEW.requests
             OR (NEW.status = 'FAILED' AND OLD.error_kind IS NOT NEW.error_kind)
             OR (NEW.status = 'CACHED' AND (OLD.size_bytes IS NOT NEW.size_bytes OR OLD.cache_key IS NOT NEW.cache_key))
        BEGIN {_sqlite_change("OLD", "-", _OLD_BYTES)} {_sqlite_change("NEW", "+", _NEW_BYTES)} END""",
]

# The bytes of every object once: the largest size among its holders (they agree: same sha256).
_RECOUNT_BYTES = [
    "UPDATE cache_asset_counts SET bytes = 0, requests = 0, logical_bytes = 0",
    f"""INSERT INTO cache_asset_counts (status, error_kind, shard, assets, bytes, requests, logical_bytes)
       SELECT status, {_KIND.format(row="cache_assets")}, 0, 0, 0, sum(COALESCE(requests, 1)),
              sum({_LOGICAL.format(row="cache_assets")})
       FROM cache_assets WHERE 1 = 1 GROUP BY status, {_KIND.format(row="cache_assets")}
       ON CONFLICT (status, error_kind, shard)
       DO UPDATE SET requests = excluded.requests, logical_bytes = excluded.logical_bytes""",
    """INSERT INTO cache_asset_counts (status, error_kind, shard, assets, bytes)
       SELECT 'CACHED', '', 0, 0, 0 WHERE NOT EXISTS (
           SELECT 1 FROM cache_asset_counts WHERE status = 'CACHED' AND error_kind = '' AND shard = 0)""",
    """UPDATE cache_asset_counts SET bytes = (
           SELECT COALESCE(sum(size), 0) FROM (
               SELECT max(COALESCE(size_bytes, 0)) AS size FROM cache_assets
               WHERE status = 'CACHED' AND cache_key IS NOT NULL GROUP BY cache_key) AS objects)
       WHERE status = 'CACHED' AND error_kind = '' AND shard = 0""",
]


def upgrade() -> None:
    op.add_column("cache_asset_counts", sa.Column("requests", sa.BigInteger(), nullable=False, server_default="0"))
    op.add_column("cache_asset_counts", sa.Column("logical_bytes", sa.BigInteger(), nullable=False,
                                                  server_default="0"))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("LOCK TABLE cache_assets IN SHARE ROW EXCLUSIVE MODE")
        op.execute(_PG_FUNCTION)
        for name in ("cache_assets_count_ins", "cache_assets_count_del", "cache_assets_count_upd"):
            op.execute(f"DROP TRIGGER {name} ON cache_assets")
        for statement in _PG_TRIGGERS:
            op.execute(statement)
        op.execute(_PG_UPDATE_TRIGGER)
    else:
        for name in ("cache_assets_count_ins", "cache_assets_count_del", "cache_assets_count_upd"):
            op.execute(f"DROP TRIGGER {name}")
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)
    for statement in _RECOUNT_BYTES:
        op.execute(statement)


def downgrade() -> None:
    # The counts stay right; the bytes of shared objects are counted once per asset again only for
    # changes made after the downgrade, as 0003's triggers did.
    import importlib

    counts = importlib.import_module("mediacache.migrations.versions.0003_asset_counts")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(counts._PG_FUNCTION.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))
        for name in ("cache_assets_count_ins", "cache_assets_count_del", "cache_assets_count_upd"):
            op.execute(f"DROP TRIGGER {name} ON cache_assets")
        for statement in counts._PG_TRIGGERS:
            op.execute(statement)
    else:
        for name in ("cache_assets_count_ins", "cache_assets_count_del", "cache_assets_count_upd"):
            op.execute(f"DROP TRIGGER {name}")
        for statement in counts._SQLITE_TRIGGERS:
            op.execute(statement)
    op.drop_column("cache_asset_counts", "logical_bytes")
    op.drop_column("cache_asset_counts", "requests")
