"""cache_assets: one row per cached (or to-be-cached) media URL

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mediacache.db.columns import UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cache_assets",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("original_url", sa.Text(), nullable=False),
        sa.Column("status", sa.Enum("PENDING", "DOWNLOADING", "CACHED", "FAILED", name="cache_status",
                                    native_enum=False, create_constraint=True, length=16), nullable=False),
        sa.Column("cache_key", sa.Text(), nullable=True),
        sa.Column("content_type", sa.String(length=255), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_kind", sa.String(length=32), nullable=True),
        sa.Column("lease_token", sa.String(length=32), nullable=True),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("cached_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_cache_assets"),
    )
    op.create_index("ix_cache_assets_status", "cache_assets", ["status"])
    op.create_index("ix_cache_assets_created_at", "cache_assets", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_cache_assets_created_at", table_name="cache_assets")
    op.drop_index("ix_cache_assets_status", table_name="cache_assets")
    op.drop_table("cache_assets")
