"""source_expires_at: when an asset's signed source link stops working, for expiry-aware scheduling

Read from the link at enqueue (fetching/expiry.py). The index serves the "at risk" count (PENDING
assets expiring within 15 minutes) without reading the table.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mediacache.db.columns import UTCDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN: a batch rebuild of the table on SQLite would drop the counting triggers.
    op.add_column("cache_assets", sa.Column("source_expires_at", UTCDateTime(), nullable=True))
    op.create_index("ix_cache_assets_status_source_expires_at", "cache_assets", ["status", "source_expires_at"])


def downgrade() -> None:
    op.drop_index("ix_cache_assets_status_source_expires_at", table_name="cache_assets")
    with op.batch_alter_table("cache_assets") as batch:
        batch.drop_column("source_expires_at")
