"""PostgreSQL records a download's bytes in turn with every other download of the same bytes

With deduplication on, a download records itself (DOWNLOADING -> CACHED, taking an already
stored object with the same sha256 and size) and then ran a second statement, converge_copies,
for the case where another download of the same bytes recorded itself at the same moment: neither
statement's snapshot saw the other's uncommitted row, so each kept its own copy, and whichever
merged last left one. `mediacache_mark_cached` takes a transaction advisory lock on the bytes
first, and its UPDATE (in a function, a new snapshot taken once the lock is held) then sees
whichever of the two recorded first, so the second always takes the first's object: one round
trip per download instead of two, and no second copy to delete.

The UPDATE is the one `AssetRepository.mark_cached` builds with sharing on; the holder it takes
is locked FOR SHARE, as there (see 0010). SQLite runs writers one at a time and needs neither.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""
from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FUNCTION = """
CREATE OR REPLACE FUNCTION mediacache_mark_cached(
    p_id uuid, p_token varchar, p_key text, p_type varchar, p_size bigint, p_sha256 varchar,
    p_now timestamptz) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    stored text;
BEGIN
    -- Held until this transaction commits: a concurrent download of the same bytes waits here,
    -- and its UPDATE then sees this one's row.
    PERFORM pg_advisory_xact_lock(hashtextextended(p_sha256 || '/' || p_size::text, 0));
    UPDATE cache_assets
    SET status = 'CACHED',
        cache_key = coalesce((SELECT holder.cache_key FROM cache_assets AS holder
                              WHERE holder.sha256 = p_sha256 AND holder.size_bytes = p_size
                                AND holder.status = 'CACHED' AND holder.id <> p_id
                                AND holder.cache_key IS NOT NULL
                              LIMIT 1 FOR SHARE), p_key),
        content_type = p_type, size_bytes = p_size, sha256 = p_sha256, error = NULL, error_kind = NULL,
        lease_token = NULL, lease_until = NULL, cached_at = p_now, updated_at = p_now
    WHERE id = p_id AND lease_token = p_token AND status = 'DOWNLOADING'
    RETURNING cache_key INTO stored;
    RETURN stored;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION IF EXISTS mediacache_mark_cached(uuid, varchar, text, varchar, bigint, varchar, "
               "timestamptz)")
