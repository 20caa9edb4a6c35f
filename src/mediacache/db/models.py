"""SQLAlchemy models of the tables mediacache owns."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Enum, Float, ForeignKey, Index, Integer, MetaData, SmallInteger, String, Text, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mediacache.db.columns import UTCDateTime, utcnow
from mediacache.domain import CacheStatus

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class CacheAsset(Base):
    __tablename__ = "cache_assets"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    original_url: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[CacheStatus] = mapped_column(
        Enum(CacheStatus, name="cache_status", native_enum=False, create_constraint=True, length=16,
             values_callable=lambda e: [m.value for m in e]),
        nullable=False, default=CacheStatus.PENDING)
    cache_key: Mapped[str | None] = mapped_column(Text)
    content_type: Mapped[str | None] = mapped_column(String(255))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    error_kind: Mapped[str | None] = mapped_column(String(32))
    # Who holds the asset while it downloads, and until when: a worker that dies leaves a lease
    # that runs out, and the next attempt may take the asset over.
    lease_token: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    cached_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Media metadata (migration 0004), written by the derive worker after the asset is CACHED.
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    frames: Mapped[int | None] = mapped_column(Integer)
    duration_s: Mapped[float | None] = mapped_column(Float)
    video_codec: Mapped[str | None] = mapped_column(String(32))
    audio_codec: Mapped[str | None] = mapped_column(String(32))
    placeholder: Mapped[str | None] = mapped_column(String(128))
    # NULL: not derived yet; else a MediaState value, with the reason in media_error.
    media_state: Mapped[str | None] = mapped_column(String(16))
    media_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_cache_assets_status", "status"),
        Index("ix_cache_assets_created_at", "created_at"),
        Index("ix_cache_assets_status_updated_at", "status", "updated_at"),
        Index("ix_cache_assets_cached_at", "cached_at"),
    )


class CacheAssetCount(Base):
    """Assets (and bytes of CACHED assets) per status and error kind, kept by triggers on cache_assets
    (migration 0003), so statistics read a few rows instead of counting the table. The shards of a
    (status, error_kind) are summed on read; a shard alone may even be negative."""

    __tablename__ = "cache_asset_counts"

    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    error_kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    assets: Mapped[int] = mapped_column(BigInteger, nullable=False)
    bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)


class CacheAssetDerivative(Base):
    """A WebP thumbnail or poster of an asset, stored under `media/<asset id>/d/<kind>-<width>.webp`."""

    __tablename__ = "cache_asset_derivatives"

    asset_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("cache_assets.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    width: Mapped[int] = mapped_column(Integer, primary_key=True)
    height: Mapped[int] = mapped_column(Integer, nullable=False)
    content_type: Mapped[str] = mapped_column(String(64), nullable=False)
    cache_key: Mapped[str] = mapped_column(Text, nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
