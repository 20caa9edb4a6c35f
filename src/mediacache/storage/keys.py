"""Storage key scheme and the check that keeps every key inside the storage root."""

from __future__ import annotations

import re
import uuid

from mediacache.errors import UnsafeKeyError

EXTENSIONS = {
    "image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/gif": ".gif",
    "image/avif": ".avif", "image/heic": ".heic", "image/bmp": ".bmp", "image/svg+xml": ".svg",
    "video/mp4": ".mp4", "video/quicktime": ".mov", "video/webm": ".webm", "video/x-matroska": ".mkv",
    "audio/mpeg": ".mp3", "audio/mp4": ".m4a", "audio/aac": ".aac", "audio/ogg": ".ogg",
    "audio/wav": ".wav", "audio/x-wav": ".wav", "audio/flac": ".flac", "audio/webm": ".weba",
}

MAX_KEY_BYTES = 1024  # S3's limit; also well under every file system's path limit
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._=+-]*"
_SAFE_SEGMENT = re.compile(f"^{_SEGMENT}$")
# The whole key in one match (ASCII only, so its length is its byte count): URL resolution checks
# hundreds of keys a call, and one regex beats a split and a match per segment by several times.
_SAFE_KEY = re.compile(f"{_SEGMENT}(?:/{_SEGMENT})*")


def asset_key(asset_id: uuid.UUID, attempt_token: str, content_type: str | None) -> str:
    """`media/<asset id>/<attempt token><ext>`.

    The key is built from our own ids, never from the URL, so no URL can steer it. Each attempt
    writes its own key, so an attempt that loses a race can delete what it wrote without
    touching the winner's object.
    """
    ext = EXTENSIONS.get((content_type or "").lower(), "")
    return f"media/{asset_id}/{attempt_token}{ext}"


def derivative_key(asset_id: uuid.UUID, kind: str, width: int) -> str:
    """`media/<asset id>/d/<kind>-<width>.webp`: next to the asset's original, named by what it is, so a
    new derive run replaces the same objects and garbage collection can tell whose they are."""
    return f"media/{asset_id}/d/{kind}-{int(width)}.webp"


def check_key(key: str) -> str:
    """Returns `key` if it is a relative path of safe segments; raises UnsafeKeyError otherwise.

    Legacy keys come from old application rows, so they are checked too before any backend
    turns them into a path or a URL.
    """
    if _SAFE_KEY.fullmatch(key) and len(key) <= MAX_KEY_BYTES:
        return key
    if not key or len(key.encode()) > MAX_KEY_BYTES:
        raise UnsafeKeyError(f"storage key {key[:80]!r} is empty or longer than {MAX_KEY_BYTES} bytes")
    for segment in key.split("/"):
        if segment in ("", ".", "..") or not _SAFE_SEGMENT.match(segment):
            raise UnsafeKeyError(
                f"storage key {key[:200]!r} has an unsafe segment {segment!r}: keys are relative paths of "
                "letters, digits and . _ = + -, without empty, '.' or '..' segments")
    return key
