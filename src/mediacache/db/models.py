"""SQLAlchemy models of the tables mediacache owns."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Enum, Index, Integer, MetaData, SmallInteger, String, Text, Uuid
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
    # When the signed source link stops working (fetching/expiry.py), read at enqueue.
    source_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_cache_assets_status", "status"),
        Index("ix_cache_assets_created_at", "created_at"),
        Index("ix_cache_assets_status_updated_at", "status", "updated_at"),
        Index("ix_cache_assets_cached_at", "cached_at"),
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
