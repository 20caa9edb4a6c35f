"""SQLAlchemy models of the tables mediacache owns."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import cast

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    Uuid,
    text,
)
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


# The statuses of a live asset, as literal SQL: the predicate of the partial unique index on
# source_key, which ON CONFLICT must repeat word for word (see migration 0004).
LIVE_PREDICATE = "status IN ('PENDING', 'DOWNLOADING', 'CACHED')"


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
    # The URL without its signing parameters (fetching.source_key); NULL with MEDIACACHE_DEDUP=off.
    source_key: Mapped[str | None] = mapped_column(Text)
    # When the asset was last asked for, and how often: cleanup and trim go by the former, the
    # usage report counts the downloads deduplication saved from the latter.
    last_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=utcnow)
    requests: Mapped[int] = mapped_column(Integer, nullable=False, default=1, server_default="1")
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
    # When the signed source link stops working (fetching/expiry.py), read at enqueue.
    source_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_cache_assets_status", "status"),
        Index("ix_cache_assets_created_at", "created_at"),
        Index("ix_cache_assets_status_updated_at", "status", "updated_at"),
        Index("ix_cache_assets_cached_at", "cached_at"),
        Index("uq_cache_assets_source_key_live", "source_key", unique=True,
              postgresql_where=text(LIVE_PREDICATE), sqlite_where=text(LIVE_PREDICATE)),
        Index("ix_cache_assets_last_requested_at", "last_requested_at", "id"),
        Index("ix_cache_assets_cache_key_status", "cache_key", "status"),
        Index("ix_cache_assets_sha256", "sha256"),
        Index("ix_cache_assets_status_source_expires_at", "status", "source_expires_at"),
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
    # Requests answered (1 per asset plus the repeats deduplication answered) and bytes as if each
    # CACHED asset had its own copy (migration 0008): the usage figures of what deduplication saved.
    requests: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    logical_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")


# BIGINT on PostgreSQL; SQLite only auto-numbers a column declared exactly INTEGER PRIMARY KEY.
_BigId = BigInteger().with_variant(Integer(), "sqlite")


class WebhookOutbox(Base):
    """One webhook delivery still to make: an event for one receiver. Written in the same transaction
    as the status change it reports (so no event is lost), deleted once the receiver took it."""

    __tablename__ = "webhook_outbox"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    event_type: Mapped[str] = mapped_column(String(32), nullable=False)
    # No foreign key: cleanup may remove the asset while its event is still on its way.
    asset_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    target_url: Mapped[str] = mapped_column(Text, nullable=False)
    payload: Mapped[str] = mapped_column(Text, nullable=False)  # the exact bytes that are signed
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    claim_token: Mapped[str | None] = mapped_column(String(32))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    dead_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_webhook_outbox_next_attempt_at", "next_attempt_at"),
        Index("ix_webhook_outbox_dead_at", "dead_at"),
    )


class MediacacheInstance(Base):
    """The identity of this database: one row with a UUID made at first use (migration 0004), so a
    queue can tell the database its jobs belong to from another one (see `broker.owner`)."""

    __tablename__ = "mediacache_instance"

    singleton: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    instance_id: Mapped[str] = mapped_column(String(36), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)

    __table_args__ = (CheckConstraint("singleton = 1", name="one_row"),)


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


# The Core tables of the models, typed as the Table they are, for the query modules.
ASSETS = cast(Table, CacheAsset.__table__)
ASSET_COUNTS = cast(Table, CacheAssetCount.__table__)
OUTBOX = cast(Table, WebhookOutbox.__table__)
