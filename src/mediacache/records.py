"""Result records of the public API: attributes that also read as a mapping."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any


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
