"""the database's identity: a one-row table with a UUID, so a queue knows which database it serves

Two deployments on one Redis database and key prefix would otherwise take each other's jobs: a
worker on the other database finds no asset of that id and completes the job as skipped. The
producer and the worker compare this id with the one recorded next to the queue in Redis.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from mediacache.db.columns import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "mediacache_instance",
        sa.Column("singleton", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("instance_id", sa.String(36), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("singleton = 1", name=op.f("ck_mediacache_instance_one_row")),
        sa.PrimaryKeyConstraint("singleton", name=op.f("pk_mediacache_instance")),
    )
    op.bulk_insert(table, [{"singleton": 1, "instance_id": str(uuid.uuid4()), "created_at": datetime.now(UTC)}])


def downgrade() -> None:
    op.drop_table("mediacache_instance")
