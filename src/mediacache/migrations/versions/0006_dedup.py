"""deduplication: source keys unique among live assets, last request time and request counts, object lookups

Revision ID: 0006
Revises: 0005 (the integrator re-chains it after 0003)
Create Date: 2026-12-10

Only ADD COLUMN and CREATE INDEX: on SQLite a table rebuild (batch mode) would drop the triggers
that other revisions keep on cache_assets.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mediacache.db.columns import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Literal SQL, the same text as in the models and the conflict target: PostgreSQL and SQLite
# only use a partial index for ON CONFLICT when the statement's WHERE matches its predicate.
LIVE = "status IN ('PENDING', 'DOWNLOADING', 'CACHED')"


def upgrade() -> None:
    op.add_column("cache_assets", sa.Column("source_key", sa.Text(), nullable=True))
    op.add_column("cache_assets", sa.Column("last_requested_at", UTCDateTime(), nullable=True))
    op.add_column("cache_assets", sa.Column("requests", sa.Integer(), nullable=False, server_default="1"))
    op.execute("UPDATE cache_assets SET last_requested_at = created_at")
    op.create_index("uq_cache_assets_source_key_live", "cache_assets", ["source_key"], unique=True,
                    postgresql_where=sa.text(LIVE), sqlite_where=sa.text(LIVE))
    op.create_index("ix_cache_assets_last_requested_at", "cache_assets", ["last_requested_at", "id"])
    op.create_index("ix_cache_assets_cache_key", "cache_assets", ["cache_key"])
    op.create_index("ix_cache_assets_sha256", "cache_assets", ["sha256"])


def downgrade() -> None:
    op.drop_index("ix_cache_assets_sha256", table_name="cache_assets")
    op.drop_index("ix_cache_assets_cache_key", table_name="cache_assets")
    op.drop_index("ix_cache_assets_last_requested_at", table_name="cache_assets")
    op.drop_index("uq_cache_assets_source_key_live", table_name="cache_assets")
    op.drop_column("cache_assets", "requests")
    op.drop_column("cache_assets", "last_requested_at")
    op.drop_column("cache_assets", "source_key")
