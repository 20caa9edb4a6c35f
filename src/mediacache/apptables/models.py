"""Models of the application tables (carousels, TikTok profiles and posts) whose `*_key` columns name media.

A `*_key` column holds either a cache asset id (as its canonical text, `str(uuid)`) or, in rows
written before mediacache, a plain storage key ("legacy key"). Each key column sits next to an
`*_original_url` column with the URL the media was scraped from: resolution falls back to it while
the asset is not cached yet, and a re-save compares against it to decide whether to queue again.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, ForeignKey, Integer, String, Table, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mediacache.db.columns import UTCDateTime, utcnow
from mediacache.db.models import Base

# BIGINT on PostgreSQL; SQLite only auto-numbers a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class TikTokProfile(Base):
    __tablename__ = "tiktok_profiles"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # The @handle: what scraped data always carries, so the upsert is keyed on it.
    username: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    tiktok_user_id: Mapped[str | None] = mapped_column(String(64), index=True)
    nickname: Mapped[str | None] = mapped_column(String(255))
    avatar_original_url: Mapped[str | None] = mapped_column(Text)
    avatar_key: Mapped[str | None] = mapped_column(Text, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class TikTokPost(Base):
    __tablename__ = "tiktok_posts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tiktok_id: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    profile_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("tiktok_profiles.id", ondelete="CASCADE"), nullable=False, index=True)
    description: Mapped[str | None] = mapped_column(Text)
    posted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    video_original_url: Mapped[str | None] = mapped_column(Text)
    video_key: Mapped[str | None] = mapped_column(Text, index=True)
    cover_original_url: Mapped[str | None] = mapped_column(Text)
    cover_key: Mapped[str | None] = mapped_column(Text, index=True)
    music_original_url: Mapped[str | None] = mapped_column(Text)
    music_key: Mapped[str | None] = mapped_column(Text, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class TikTokPostImage(Base):
    """The images of a TikTok photo post, in order.

    A table rather than a JSON column: cleanup asks "does any row reference this asset?" and the
    backfill rewrites keys in place, and both are plain indexed SQL on a column, the same on SQLite
    and PostgreSQL, where JSON would need each dialect's own JSON functions and scans.
    """

    __tablename__ = "tiktok_post_images"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    post_id: Mapped[int] = mapped_column(BigId, ForeignKey("tiktok_posts.id", ondelete="CASCADE"), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    original_url: Mapped[str | None] = mapped_column(Text)
    image_key: Mapped[str | None] = mapped_column(Text, index=True)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (UniqueConstraint("post_id", "position"),)


class Carousel(Base):
    __tablename__ = "carousels"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    title: Mapped[str | None] = mapped_column(Text)
    author_name: Mapped[str | None] = mapped_column(String(255))
    author_avatar_original_url: Mapped[str | None] = mapped_column(Text)
    author_avatar_key: Mapped[str | None] = mapped_column(Text, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class CarouselImage(Base):
    __tablename__ = "carousel_images"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    carousel_id: Mapped[int] = mapped_column(BigId, ForeignKey("carousels.id", ondelete="CASCADE"), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    original_url: Mapped[str | None] = mapped_column(Text)
    image_key: Mapped[str | None] = mapped_column(Text, index=True)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (UniqueConstraint("carousel_id", "position"),)


class CarouselSlide(Base):
    __tablename__ = "carousel_slides"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    carousel_id: Mapped[int] = mapped_column(BigId, ForeignKey("carousels.id", ondelete="CASCADE"), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    text: Mapped[str | None] = mapped_column(Text)
    background_image_original_url: Mapped[str | None] = mapped_column(Text)
    background_image_key: Mapped[str | None] = mapped_column(Text, index=True)

    __table_args__ = (UniqueConstraint("carousel_id", "position"),)


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


profiles = _table(TikTokProfile)
posts = _table(TikTokPost)
post_images = _table(TikTokPostImage)
carousels = _table(Carousel)
carousel_images = _table(CarouselImage)
carousel_slides = _table(CarouselSlide)

# Every column that may hold a cache asset id or a legacy key, with its row's primary key and the
# original URL beside it: what cleanup checks for references and what the backfill converts.
KEY_COLUMNS: list[tuple[Table, Column[str | None], Column[str | None]]] = [
    (carousels, carousels.c.author_avatar_key, carousels.c.author_avatar_original_url),
    (carousel_images, carousel_images.c.image_key, carousel_images.c.original_url),
    (carousel_slides, carousel_slides.c.background_image_key, carousel_slides.c.background_image_original_url),
    (profiles, profiles.c.avatar_key, profiles.c.avatar_original_url),
    (posts, posts.c.video_key, posts.c.video_original_url),
    (posts, posts.c.cover_key, posts.c.cover_original_url),
    (posts, posts.c.music_key, posts.c.music_original_url),
    (post_images, post_images.c.image_key, post_images.c.original_url),
]

__all__ = [
    "KEY_COLUMNS", "Carousel", "CarouselImage", "CarouselSlide", "TikTokPost", "TikTokPostImage",
    "TikTokProfile", "carousel_images", "carousel_slides", "carousels", "post_images", "posts", "profiles",
]
