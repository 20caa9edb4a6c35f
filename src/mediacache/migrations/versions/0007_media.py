"""media metadata on cache_assets, and the derivatives (thumbnails, posters) of each asset

The columns are nullable: an asset cached before this revision (or whose derive job has not run)
has none, and `media_state` NULL is what `mediacache derive --missing` looks for. Derivative rows
go with their asset (ON DELETE CASCADE); cleanup deletes their objects before the asset's row.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

def _columns() -> list[sa.Column[object]]:
    return [
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("frames", sa.Integer(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("video_codec", sa.String(length=32), nullable=True),
        sa.Column("audio_codec", sa.String(length=32), nullable=True),
        sa.Column("placeholder", sa.String(length=128), nullable=True),
        sa.Column("media_state", sa.String(length=16), nullable=True),
        sa.Column("media_error", sa.Text(), nullable=True),
    ]


def upgrade() -> None:
    # Plain ADD COLUMN of nullable columns: no table rewrite on PostgreSQL, and SQLite supports it
    # without Alembic's copy-and-move batch mode (which would drop the counting triggers of 0003).
    for column in _columns():
        op.add_column("cache_assets", column)
    op.create_table(
        "cache_asset_derivatives",
        sa.Column("asset_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("content_type", sa.String(length=64), nullable=False),
        sa.Column("cache_key", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["asset_id"], ["cache_assets.id"], ondelete="CASCADE",
                                name="fk_cache_asset_derivatives_asset_id_cache_assets"),
        sa.PrimaryKeyConstraint("asset_id", "kind", "width", name="pk_cache_asset_derivatives"),
    )


def downgrade() -> None:
    op.drop_table("cache_asset_derivatives")
    with op.batch_alter_table("cache_assets") as batch:
        for column in reversed(_columns()):
            batch.drop_column(column.name)
