"""Request and response bodies of the JSON API (pydantic models; they also feed the OpenAPI schema)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator

from mediacache.domain import CacheStatus
from mediacache.fetching.urls import MAX_URL_LENGTH

# A batch is one transaction and one addBulk; larger batches belong in several requests, so that no
# single request holds a database transaction (or the event loop) for long.
MAX_API_BATCH = 1000
MAX_URL_CHARS = MAX_URL_LENGTH
# In the OpenAPI schema as well as checked here, so that generated clients refuse what the server
# refuses: http(s), a DNS name (last label not numeric) or a canonical IPv4 address, a port in
# range, no credentials, whitespace, controls or backslashes. JSON Schema patterns have no
# case-insensitive flag, hence the character classes. validate_url still has the last word
# (IDNA, label lengths), behind a 422 invalid_url; IPv6 and international hosts are left to it.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_HOST = (rf"(?:{_OCTET}(?:\.{_OCTET}){{3}}"
         r"|(?:[A-Za-z0-9_][A-Za-z0-9_-]{0,62}\.)*[A-Za-z_][A-Za-z0-9_-]{0,62}\.?)")
_PORT = r"(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?"
# The lookahead bounds the host to 253 characters, the longest DNS name.
_HOST_LENGTH = r"(?=[^/?#:]{1,253}(?:[:/?#]|$))"
URL_PATTERN = rf"^[hH][tT][tT][pP][sS]?://{_HOST_LENGTH}{_HOST}{_PORT}(?:[/?#][^\s\x00-\x1f\x7f-\x9f\\]*)?$"

Url = Annotated[str, StringConstraints(min_length=1, max_length=MAX_URL_CHARS, pattern=URL_PATTERN)]
# An original URL to fall back to is handed back as given, never fetched: only its length is bounded.
FallbackUrl = Annotated[str, StringConstraints(max_length=MAX_URL_CHARS)]
# A value to resolve: an asset id or a legacy storage key (at most 1024 bytes, as S3 keys).
Value = Annotated[str, StringConstraints(max_length=1024)]


class _Strict(BaseModel):
    # Unknown fields are refused, so a misspelt field ("url" for "urls") is a 422, not silently ignored.
    # Strict types: `{"days": true}` or `{"days": "1"}` on a destructive call is a 422, never days=1.
    # python-re: the URL pattern bounds the host with a look-ahead, which the default engine lacks.
    model_config = ConfigDict(extra="forbid", strict=True, regex_engine="python-re")


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
    last_requested_at: datetime | None = None
    requests: int = 1
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
    # The equal-length rule cannot be said in JSON Schema; a description and an `x-` keyword say it.
    model_config = ConfigDict(json_schema_extra={"x-equal-length": ["values", "original_urls"]})

    values: list[Value | None] = Field(max_length=MAX_API_BATCH, description=(
        "asset ids or legacy storage keys; a legacy key is resolved only when an object is stored under it"))
    original_urls: list[FallbackUrl | None] | None = Field(default=None, max_length=MAX_API_BATCH, description=(
        "when given, exactly as many entries as `values` (null where there is none): "
        "the URL to answer for a value that has no stored copy"))

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
    at_risk: int = Field(0, description="PENDING assets whose source link expires within 15 minutes")


class HostStateBody(BaseModel):
    host: str
    breaker: Literal["closed", "open", "half_open"]
    open_until: float | None = Field(description="unix seconds; while the breaker is open")
    recent_failures: int = Field(description="failures within the breaker's window")
    rate_per_s: float = Field(description="requests per second, averaged over the last few seconds")
    permits_in_use: int
    paused_until: float | None = Field(description="unix seconds; set by a 429/503 Retry-After")
    limits: str | None = Field(description="the rule applied, e.g. 20/s:8")


class StatsResponse(BaseModel):
    queue: QueueStatsBody
    cache: CacheStatsBody
    hosts: list[HostStateBody] = Field(default_factory=list, description="the most recently used hosts")


class SourceRequest(_Strict):
    url: Url


class RetriedResponse(BaseModel):
    retried: int


def _number_not_bool_or_text(value: Any) -> Any:
    if isinstance(value, bool | str):
        raise ValueError(f"expected a JSON integer, not {type(value).__name__} {value!r:.20}")
    return value


# An integer as JSON Schema means it: 7 and 7.0 (JSON has one number type), never true or "7".
JsonInt = Annotated[int, Field(strict=False), BeforeValidator(_number_not_bool_or_text)]


class CleanupRequest(_Strict):
    days: JsonInt = Field(default=30, ge=0, le=100_000)
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


class WebhookStatsBody(BaseModel):
    pending: int = Field(description="deliveries not yet taken by their receiver, retries included")
    dead: int = Field(description="deliveries given up on after MEDIACACHE_WEBHOOK_RETRY_HOURS")


class DashboardResponse(BaseModel):
    queue: QueueStatsBody | None = Field(description="null while Redis does not answer")
    queue_error: str | None
    cache: CacheStatsBody
    stored_bytes: int
    downloads_avoided: int = Field(default=0, description="requests an existing asset answered (deduplication)")
    bytes_not_stored: int = Field(default=0, description="bytes that shared objects saved (deduplication)")
    failures: list[FailureBody]
    throughput_bucket_s: int
    throughput: list[tuple[int, int]] = Field(description="(bucket start in unix seconds, assets cached)")
    hosts: list[HostStateBody] = Field(default_factory=list, description="the most recently used hosts")
    webhooks: WebhookStatsBody | None = Field(None, description="null when no MEDIACACHE_WEBHOOK_URL is set")


class UsageGroupBody(BaseModel):
    assets: int
    bytes: int


class BucketCheckBody(BaseModel):
    orphan_objects: int
    orphan_bytes: int
    missing_objects: int
    missing_bytes: int


class UsageResponse(BaseModel):
    """See `mediacache.records.UsageReport`."""

    assets: int
    stored_objects: int
    stored_bytes: int
    logical_bytes: int
    downloads_avoided: int
    bytes_not_stored: int
    by_status: dict[str, UsageGroupBody]
    by_content_type: dict[str, UsageGroupBody]
    by_host: dict[str, UsageGroupBody]
    by_age: dict[str, UsageGroupBody] = Field(description="by time since the last request: 0-1d, 1-7d, 7-30d, older")
    bucket: BucketCheckBody | None = Field(description="null unless check_bucket=true")


class ErrorResponse(BaseModel):
    error: str = Field(description="a stable, machine-readable code")
    detail: Any = Field(description="what is wrong, and how to fix it")


class ReadyResponse(BaseModel):
    status: str
    checks: dict[str, str]
