"""Request and response bodies of the JSON API (pydantic models; they also feed the OpenAPI schema)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from mediacache.domain import CacheStatus

# A batch is one transaction and one addBulk; larger batches belong in several requests, so that no
# single request holds a database transaction (or the event loop) for long.
MAX_API_BATCH = 1000
MAX_URL_CHARS = 8192

Url = Annotated[str, StringConstraints(min_length=1, max_length=MAX_URL_CHARS)]
# A value to resolve: an asset id or a legacy storage key (at most 1024 bytes, as S3 keys).
Value = Annotated[str, StringConstraints(max_length=1024)]


class _Strict(BaseModel):
    # Unknown fields are refused, so a misspelt field ("url" for "urls") is a 422, not silently ignored.
    model_config = ConfigDict(extra="forbid")


class QueueRequest(_Strict):
    url: Url


class QueueBatchRequest(_Strict):
    urls: list[Url] = Field(max_length=MAX_API_BATCH)


class QueuedResponse(BaseModel):
    id: uuid.UUID
    status: CacheStatus


class QueuedBatchResponse(BaseModel):
    ids: list[uuid.UUID]


class AssetResponse(BaseModel):
    id: uuid.UUID
    original_url: str
    status: CacheStatus
    url: str | None = Field(description="What to show now: the stored copy once CACHED, else the original URL")
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
    width: int | None = None
    height: int | None = None
    frames: int | None = Field(default=None, description="frames of an animated image, 1 for a still")
    duration_s: float | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    placeholder: str | None = Field(default=None, description="a ThumbHash, base64-encoded")
    media_state: str | None = Field(
        default=None, description="null until derived; pending, ok, too_large, corrupt, unsupported or failed")
    media_error: str | None = None
    derivatives: list[DerivativeBody] = Field(default_factory=list)


class DerivativeBody(BaseModel):
    kind: str = Field(description="thumb (an image's) or poster (a video's first frame)")
    width: int
    height: int
    content_type: str
    url: str


class ResolveRequest(_Strict):
    values: list[Value | None] = Field(max_length=MAX_API_BATCH)
    original_urls: list[Url | None] | None = Field(default=None, max_length=MAX_API_BATCH)

    @model_validator(mode="after")
    def _same_length(self) -> ResolveRequest:
        if self.original_urls is not None and len(self.original_urls) != len(self.values):
            raise ValueError(f"original_urls has {len(self.original_urls)} entries but values has "
                             f"{len(self.values)}; give one original URL (or null) per value")
        return self


class ResolveResponse(BaseModel):
    urls: list[str | None]


class QueueStatsBody(BaseModel):
    waiting: int
    active: int
    completed: int
    failed: int
    delayed: int


class CacheStatsBody(BaseModel):
    pending: int
    downloading: int
    cached: int
    failed: int
    total: int
    failed_by_kind: dict[str, int]


class StatsResponse(BaseModel):
    queue: QueueStatsBody
    cache: CacheStatsBody


class RetriedResponse(BaseModel):
    retried: int


class CleanupRequest(_Strict):
    days: int = Field(default=30, ge=0, le=100_000)
    include_referenced: bool = Field(default=False, description="also assets that application rows point at")


class CleanupResponse(BaseModel):
    removed: int


class FailureBody(BaseModel):
    id: uuid.UUID
    original_url: str
    error_kind: str | None
    error: str | None
    attempts: int
    failed_at: datetime


class DashboardResponse(BaseModel):
    queue: QueueStatsBody | None = Field(description="null while Redis does not answer")
    queue_error: str | None
    cache: CacheStatsBody
    stored_bytes: int
    failures: list[FailureBody]
    throughput_bucket_s: int
    throughput: list[tuple[int, int]] = Field(description="(bucket start in unix seconds, assets cached)")


class ErrorResponse(BaseModel):
    error: str = Field(description="a stable, machine-readable code")
    detail: Any = Field(description="what is wrong, and how to fix it")


class ReadyResponse(BaseModel):
    status: str
    checks: dict[str, str]
