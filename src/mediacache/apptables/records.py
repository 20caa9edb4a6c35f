"""Records the application-table use cases return: every `*_key` beside the URL it resolves to."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from mediacache.errors import MediaCacheError
from mediacache.records import _MappingRecord


class RecordNotFoundError(MediaCacheError):
    """An application row that the caller named by id does not exist."""


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
