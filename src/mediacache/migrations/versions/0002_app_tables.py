"""application tables: carousels and TikTok profiles and posts, whose *_key columns name media

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mediacache.db.columns import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# BIGINT on PostgreSQL; SQLite only auto-numbers a column declared exactly INTEGER PRIMARY KEY.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# (table, key column) pairs that get an index: cleanup asks, per asset, whether any row holds its id.
_KEY_INDEXES = [
    ("tiktok_profiles", "avatar_key"), ("tiktok_posts", "video_key"), ("tiktok_posts", "cover_key"),
    ("tiktok_posts", "music_key"), ("tiktok_post_images", "image_key"), ("carousels", "author_avatar_key"),
    ("carousel_images", "image_key"), ("carousel_slides", "background_image_key"),
]


def _timestamps() -> list[sa.Column[object]]:
    return [sa.Column("created_at", UTCDateTime(), nullable=False),
            sa.Column("updated_at", UTCDateTime(), nullable=False)]


def upgrade() -> None:
    op.create_table(
        "tiktok_profiles",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=255), nullable=False),
        sa.Column("tiktok_user_id", sa.String(length=64), nullable=True),
        sa.Column("nickname", sa.String(length=255), nullable=True),
        sa.Column("avatar_original_url", sa.Text(), nullable=True),
        sa.Column("avatar_key", sa.Text(), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_tiktok_profiles"),
        sa.UniqueConstraint("username", name="uq_tiktok_profiles_username"),
    )
    op.create_index("ix_tiktok_profiles_tiktok_user_id", "tiktok_profiles", ["tiktok_user_id"])
    op.create_table(
        "tiktok_posts",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("tiktok_id", sa.String(length=64), nullable=False),
        sa.Column("profile_id", BigId, nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("posted_at", UTCDateTime(), nullable=True),
        sa.Column("video_original_url", sa.Text(), nullable=True),
        sa.Column("video_key", sa.Text(), nullable=True),
        sa.Column("cover_original_url", sa.Text(), nullable=True),
        sa.Column("cover_key", sa.Text(), nullable=True),
        sa.Column("music_original_url", sa.Text(), nullable=True),
        sa.Column("music_key", sa.Text(), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_tiktok_posts"),
        sa.UniqueConstraint("tiktok_id", name="uq_tiktok_posts_tiktok_id"),
        sa.ForeignKeyConstraint(["profile_id"], ["tiktok_profiles.id"], ondelete="CASCADE",
                                name="fk_tiktok_posts_profile_id_tiktok_profiles"),
    )
    op.create_index("ix_tiktok_posts_profile_id", "tiktok_posts", ["profile_id"])
    op.create_table(
        "tiktok_post_images",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("post_id", BigId, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("original_url", sa.Text(), nullable=True),
        sa.Column("image_key", sa.Text(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tiktok_post_images"),
        sa.UniqueConstraint("post_id", "position", name="uq_tiktok_post_images_post_id_position"),
        sa.ForeignKeyConstraint(["post_id"], ["tiktok_posts.id"], ondelete="CASCADE",
                                name="fk_tiktok_post_images_post_id_tiktok_posts"),
    )
    op.create_table(
        "carousels",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("author_name", sa.String(length=255), nullable=True),
        sa.Column("author_avatar_original_url", sa.Text(), nullable=True),
        sa.Column("author_avatar_key", sa.Text(), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_carousels"),
    )
    op.create_table(
        "carousel_images",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("carousel_id", BigId, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("original_url", sa.Text(), nullable=True),
        sa.Column("image_key", sa.Text(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_carousel_images"),
        sa.UniqueConstraint("carousel_id", "position", name="uq_carousel_images_carousel_id_position"),
        sa.ForeignKeyConstraint(["carousel_id"], ["carousels.id"], ondelete="CASCADE",
                                name="fk_carousel_images_carousel_id_carousels"),
    )
    op.create_table(
        "carousel_slides",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("carousel_id", BigId, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("background_image_original_url", sa.Text(), nullable=True),
        sa.Column("background_image_key", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_carousel_slides"),
        sa.UniqueConstraint("carousel_id", "position", name="uq_carousel_slides_carousel_id_position"),
        sa.ForeignKeyConstraint(["carousel_id"], ["carousels.id"], ondelete="CASCADE",
                                name="fk_carousel_slides_carousel_id_carousels"),
    )
    for table, column in _KEY_INDEXES:
        op.create_index(f"ix_{table}_{column}", table, [column])


def downgrade() -> None:
    for table, column in reversed(_KEY_INDEXES):
        op.drop_index(f"ix_{table}_{column}", table_name=table)
    op.drop_table("carousel_slides")
    op.drop_table("carousel_images")
    op.drop_table("carousels")
    op.drop_table("tiktok_post_images")
    op.drop_index("ix_tiktok_posts_profile_id", table_name="tiktok_posts")
    op.drop_table("tiktok_posts")
    op.drop_index("ix_tiktok_profiles_tiktok_user_id", table_name="tiktok_profiles")
    op.drop_table("tiktok_profiles")
