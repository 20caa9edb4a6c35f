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
    # The URL without its signing parameters (None with MEDIACACHE_DEDUP=off); when the asset was
    # last asked for, and how many times (each repeat was a download deduplication saved).
    source_key: str | None = None
    last_requested_at: datetime | None = None
    requests: int = 1
    # Media metadata, filled by the derive worker once the asset is CACHED (None until then, and
    # where it does not apply: no frames for a video, no width for audio).
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    duration_s: float | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    # A ThumbHash (base64): a ~25-byte blurred preview to paint while the image loads.
    placeholder: str | None = None
    # None: not derived yet; else a MediaState value (ok, too_large, corrupt, unsupported, failed).
    media_state: str | None = None
    media_error: str | None = None
    # `{"kind": "thumb"|"poster", "width", "height", "content_type", "url"}`, narrowest first.
    derivatives: list[dict[str, Any]] = field(default_factory=list)
    source_expires_at: datetime | None = None  # when the signed source link stops working


@dataclass(frozen=True)
class MediaInfo(_MappingRecord):
    """What a frontend needs to lay out and preview one media slot before loading it."""

    width: int | None = None
    height: int | None = None
    placeholder: str | None = None
    # Image thumbnails, `{"width", "height", "url"}` narrowest first; a video's posters in `posters`.
    thumbnails: list[dict[str, Any]] = field(default_factory=list)
    posters: list[dict[str, Any]] = field(default_factory=list)
    duration_s: float | None = None


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


@dataclass(frozen=True)
class UsageGroup(_MappingRecord):
    """Assets and their bytes (as if each had its own copy) in one group of a usage report."""

    assets: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class BucketCheck(_MappingRecord):
    """The store listed against the database: objects no asset owns, assets whose object is missing."""

    orphan_objects: int = 0
    orphan_bytes: int = 0
    missing_objects: int = 0
    missing_bytes: int = 0


@dataclass(frozen=True)
class UsageReport(_MappingRecord):
    """What `usage()` reports: assets and bytes by status, content type, source host and age since
    the last request, and what deduplication saved.

    `stored_bytes` counts each stored object once; `logical_bytes` counts it once per CACHED asset,
    so `bytes_not_stored` (their difference) is what content deduplication saved. `downloads_avoided`
    counts the requests that an existing asset answered (URL deduplication).
    """

    assets: int
    stored_objects: int
    stored_bytes: int
    logical_bytes: int
    downloads_avoided: int
    bytes_not_stored: int
    by_status: dict[str, UsageGroup] = field(default_factory=dict)
    by_content_type: dict[str, UsageGroup] = field(default_factory=dict)
    by_host: dict[str, UsageGroup] = field(default_factory=dict)
    by_age: dict[str, UsageGroup] = field(default_factory=dict)
    bucket: BucketCheck | None = None


# ---- the application tables ---------------------------------------------------------------


@dataclass(frozen=True)
class ImageRecord(_MappingRecord):
    position: int
    image_key: str | None
    url: str | None
    width: int | None
    height: int | None
    # The cached asset's metadata and thumbnails (width/height above are what the application saved).
    media: MediaInfo | None = None


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
    avatar_media: MediaInfo | None = None


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
    video_media: MediaInfo | None = None
    cover_media: MediaInfo | None = None
    music_media: MediaInfo | None = None


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
    background_image_media: MediaInfo | None = None


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
    author_avatar_media: MediaInfo | None = None


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
