"""Statuses, error kinds and the allowed status transitions of a cache asset, and sizes as people
read them; no I/O."""

from __future__ import annotations

import uuid
from enum import StrEnum


class CacheStatus(StrEnum):
    PENDING = "PENDING"
    DOWNLOADING = "DOWNLOADING"
    CACHED = "CACHED"
    FAILED = "FAILED"


class ErrorKind(StrEnum):
    TRANSIENT = "transient"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    BLOCKED = "blocked"
    TOO_LARGE = "too_large"
    UNSUPPORTED_TYPE = "unsupported_type"
    INVALID_URL = "invalid_url"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    EXPIRED = "expired"


# Only these are worth another attempt; every other kind is final at once.
RETRYABLE_KINDS: frozenset[ErrorKind] = frozenset({ErrorKind.TRANSIENT})

# target status -> the statuses it may be reached from. The repository turns each entry into
# one conditional UPDATE (`WHERE status IN (...)`), so a refused transition changes no row.
TRANSITIONS: dict[CacheStatus, frozenset[CacheStatus]] = {
    CacheStatus.DOWNLOADING: frozenset({CacheStatus.PENDING, CacheStatus.DOWNLOADING}),
    CacheStatus.CACHED: frozenset({CacheStatus.DOWNLOADING}),
    CacheStatus.FAILED: frozenset({CacheStatus.PENDING, CacheStatus.DOWNLOADING}),
    # FAILED -> PENDING is a retry; CACHED -> PENDING only repairs an asset whose object was
    # found missing from storage (`mediacache reconcile --requeue-missing`).
    CacheStatus.PENDING: frozenset({CacheStatus.FAILED, CacheStatus.CACHED}),
}


def can_transition(source: CacheStatus, target: CacheStatus) -> bool:
    return source in TRANSITIONS.get(target, frozenset())


def parse_asset_id(value: object) -> uuid.UUID | None:
    """The asset id `value` names, or None for a legacy storage key or nothing.

    Resolution, cleanup and the backfill all apply this one rule to tell ids from legacy keys.
    """
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str) and len(value) in (32, 36):
        try:
            return uuid.UUID(value)
        except ValueError:
            return None
    return None


class MediaState(StrEnum):
    """Where an asset's metadata and derivatives stand; NULL in the row means not derived yet.

    Derivative work never changes the asset's CacheStatus: a CACHED asset stays CACHED whatever this says.
    """

    PENDING = "pending"  # a derive job is queued (set by `mediacache derive`)
    OK = "ok"
    TOO_LARGE = "too_large"  # the header declares more pixels or frames than MEDIACACHE_MAX_PIXELS/_FRAMES
    CORRUPT = "corrupt"  # undecodable, truncated, or the decoder crashed or timed out
    UNSUPPORTED = "unsupported"  # a type we make no derivatives of (SVG, BMP, ...)
    FAILED = "failed"  # our side failed (storage, database) after the job's retries


# ---- sizes as people read them: one formatter for messages, the CLI and the dashboard ----------


def human_bytes(n: int) -> str:
    """`629145600` -> `600.0 MiB` (binary units; whole bytes below 1 KiB)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def bytes_and_human(n: int) -> str:
    """`629145600` -> `629145600 bytes (600.0 MiB)`: exact for logs, readable for people."""
    return f"{n} bytes ({human_bytes(n)})"
