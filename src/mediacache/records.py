"""Every result type a public method returns: attributes that also read as a mapping."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from mediacache.domain import CacheStatus


class _MappingRecord:
    """`stats.cached` and `stats["cached"]` both work; `dict(stats)` gives the fields."""

    def __getitem__(self, name: str) -> Any:
        if name not in self.keys():
            raise KeyError(name)
        return getattr(self, name)

    def keys(self) -> list[str]:
        return [f.name for f in fields(self)]  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.keys()}


@dataclass(frozen=True)
class AssetRecord(_MappingRecord):
    """A cache asset as `get_asset` returns it."""

    id: uuid.UUID
    original_url: str
    status: CacheStatus
    cache_key: str | None
    content_type: str | None
    size_bytes: int | None
    sha256: str | None
    attempts: int
    error: str | None
    error_kind: str | None
    created_at: datetime
    updated_at: datetime
    cached_at: datetime | None
    source_expires_at: datetime | None = None  # when the signed source link stops working


@dataclass(frozen=True)
class QueueStats(_MappingRecord):
    waiting: int
    active: int
    completed: int
    failed: int
    delayed: int


@dataclass(frozen=True)
class CacheStats(_MappingRecord):
    pending: int
    downloading: int
    cached: int
    failed: int
    total: int
    failed_by_kind: dict[str, int] = field(default_factory=dict)
    at_risk: int = 0  # PENDING assets whose source link expires within the next 15 minutes


@dataclass(frozen=True)
class ImageRef(_MappingRecord):
    id: uuid.UUID | None
    width: int | None
    height: int | None


@dataclass(frozen=True)
class TikTokMedia(_MappingRecord):
    video: uuid.UUID | None
    cover: uuid.UUID | None
    music: uuid.UUID | None
    avatar: uuid.UUID | None
    images: list[ImageRef]


@dataclass(frozen=True)
class CleanupResult(_MappingRecord):
    removed: int
    kept_referenced: int
    not_cleaned: int


@dataclass(frozen=True)
class ReconcileReport(_MappingRecord):
    """What `reconcile` did: jobs queued again, and CACHED assets whose object is missing."""

    requeued: int = 0
    missing_objects: list[tuple[str, str]] = field(default_factory=list)
    requeued_missing: int = 0


@dataclass(frozen=True)
class GcReport(_MappingRecord):
    """What `collect_garbage` found (and unless a dry run, deleted)."""

    orphan_objects: list[str] = field(default_factory=list)
    orphan_bytes: int = 0
    deleted_objects: int = 0
    dangling_rows: list[tuple[str, str]] = field(default_factory=list)
    stale_temporary_files: int = 0


# ---- the application tables ---------------------------------------------------------------


@dataclass(frozen=True)
class ImageRecord(_MappingRecord):
    position: int
    image_key: str | None
    url: str | None
    width: int | None
    height: int | None


@dataclass(frozen=True)
class TikTokProfileRecord(_MappingRecord):
    id: int
    username: str
    tiktok_user_id: str | None
    nickname: str | None
    avatar_key: str | None
    avatar_url: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class TikTokPostRecord(_MappingRecord):
    id: int
    tiktok_id: str
    description: str | None
    posted_at: datetime | None
    profile: TikTokProfileRecord
    video_key: str | None
    video_url: str | None
    cover_key: str | None
    cover_url: str | None
    music_key: str | None
    music_url: str | None
    images: list[ImageRecord]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class TikTokPostPage(_MappingRecord):
    """One page, newest first; pass `next_cursor` back as `cursor` for the next (None: last page)."""

    items: list[TikTokPostRecord]
    next_cursor: int | None


@dataclass(frozen=True)
class SlideRecord(_MappingRecord):
    position: int
    text: str | None
    background_image_key: str | None
    background_image_url: str | None


@dataclass(frozen=True)
class CarouselRecord(_MappingRecord):
    id: int
    title: str | None
    author_name: str | None
    author_avatar_key: str | None
    author_avatar_url: str | None
    images: list[ImageRecord]
    slides: list[SlideRecord]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class LegacyKeyProblem(_MappingRecord):
    """A legacy key the backfill left alone, and where it sits."""

    table: str
    column: str
    row_id: int
    key: str
    reason: str


@dataclass(frozen=True)
class BackfillReport(_MappingRecord):
    """What `backfill-legacy-keys` changed, or with `dry_run` would change."""

    dry_run: bool
    rows_seen: int = 0
    rows_converted: int = 0
    keys_converted: int = 0
    problems: list[LegacyKeyProblem] = field(default_factory=list)


@dataclass(frozen=True)
class WaitResult(_MappingRecord):
    """What `wait` found: `records` in input order (None for an asset that does not exist), and the
    ids that were not final yet when the time ran out (empty when every one is)."""

    records: list[AssetRecord | None]
    not_final: list[uuid.UUID]

    @property
    def done(self) -> bool:
        return not self.not_final


@dataclass(frozen=True)
class WebhookStats(_MappingRecord):
    """Webhook deliveries in the outbox: `pending` (not yet taken by the receiver, retries included)
    and `dead` (given up on after MEDIACACHE_WEBHOOK_RETRY_HOURS)."""

    pending: int
    dead: int
