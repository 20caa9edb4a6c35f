"""The exceptions mediacache raises; library errors are turned into these where they enter.

    MediaCacheError
    ├── ConfigError                 a setting is missing, malformed or inconsistent
    │   └── QueueOwnerMismatchError the queue belongs to another database: give each its own queue
    ├── InvalidArgumentError        a call got an argument it cannot use (also a ValueError)
    │   └── BatchTooLargeError      more items in one call than it accepts
    ├── InvalidURLError             a URL refused before anything is written
    ├── RecordNotFoundError         an application row (or asset) named by id does not exist
    ├── AssetStateError             the asset's status does not allow the change (e.g. refresh a CACHED one)
    ├── QueueUnavailableError       Redis did not answer; nothing was queued
    ├── DatabaseError               the database did not answer or refused a query
    │   └── NotMigratedError        the schema is missing or behind: run `mediacache db upgrade`
    ├── StorageError                the object store failed or refused an operation
    │   ├── UnsafeKeyError          a key that would leave the storage root
    │   └── StorageUnavailableError the store cannot be reached or written at start-up
    ├── FetchError                  a download attempt failed; `kind` says how, `retryable` whether
    │                               another attempt can succeed
    ├── FinalFailureError           a job attempt that must not be retried (its asset is FAILED)
    ├── LeaseHeldError              another worker holds the asset; the job waits, spending no attempt
    └── RangeNotSatisfiableError    an HTTP Range names no byte of the object (416)
"""

from __future__ import annotations

import re
from datetime import datetime

from mediacache.domain import RETRYABLE_KINDS, ErrorKind


class MediaCacheError(Exception):
    """Root of every error mediacache raises on purpose."""


class ConfigError(MediaCacheError):
    """A setting is missing, malformed or inconsistent."""


class QueueOwnerMismatchError(ConfigError):
    """The queue on this Redis and key prefix was bound to another database: its jobs name assets
    that this database does not have. Separate the deployments (MEDIACACHE_QUEUE_PREFIX, REDIS_DB)."""


class InvalidArgumentError(MediaCacheError, ValueError):
    """A call got an argument it cannot use: out of range, of the wrong type, or inconsistent.

    It is a ValueError too, so callers that guard a call with `except ValueError` keep working.
    """


class BatchTooLargeError(InvalidArgumentError):
    """More items in one call than it accepts; split them over several calls."""

    def __init__(self, what: str, count: int, limit: int) -> None:
        super().__init__(f"{count} {what} in one call; send at most {limit} per call")
        self.count = count
        self.limit = limit


class InvalidURLError(MediaCacheError):
    """A URL that is refused before anything is written."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"refused URL {shown_url(url)!r}: {reason}")
        self.url = url
        self.reason = reason
        self.kind = ErrorKind.INVALID_URL


class RecordNotFoundError(MediaCacheError):
    """An application row that the caller named by id does not exist."""


class AssetStateError(MediaCacheError):
    """The asset exists but its status does not allow the change asked for; nothing was changed."""


class QueueUnavailableError(MediaCacheError):
    """Redis could not be reached, so nothing was queued."""


class DatabaseError(MediaCacheError):
    """The database could not be reached or refused a query."""


class NotMigratedError(DatabaseError):
    """The database schema is missing or older than this code."""


class StorageError(MediaCacheError):
    """The object store failed or refused an operation."""


class UnsafeKeyError(StorageError):
    """A storage key that is empty, absolute, or would climb out of the storage root."""


class StorageUnavailableError(StorageError):
    """The object store cannot be reached, or refuses writes (checked when a worker starts)."""


class FetchError(MediaCacheError):
    """One download attempt failed. `kind` is an ErrorKind; `retryable` says whether to try again.

    `host_verdict` is what the failure says about the origin host, for the per-host limiter:
    "failure" (time-out, connection error, 5xx), "throttled" (429 or 503 with Retry-After), "ok"
    (the host answered, e.g. a 404), or None (no verdict: no request was made, or storage failed).
    """

    def __init__(self, kind: ErrorKind, message: str, *, retry_after_s: float | None = None,
                 host_verdict: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after_s = retry_after_s
        self.host_verdict = host_verdict

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS


class FinalFailureError(MediaCacheError):
    """A job attempt that must not be retried: its asset is FAILED already. `host_verdict` and
    `retry_after_s` carry the FetchError's, for the per-host limiter."""

    def __init__(self, message: str, *, host_verdict: str | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.host_verdict = host_verdict
        self.retry_after_s = retry_after_s


class LeaseHeldError(MediaCacheError):
    """Another worker holds a live lease on the asset; this job waits until `retry_at` and tries again."""

    def __init__(self, message: str, retry_at: datetime) -> None:
        super().__init__(message)
        self.retry_at = retry_at


class RangeNotSatisfiableError(MediaCacheError):
    """The Range header names no byte of the representation: answer 416."""


# The password of a URL's user:password@, found without parsing: an unparseable URL (a broken IPv6
# host, a bad redirect Location) must not echo its password either.
_PASSWORD = re.compile(r"(?P<head>(?:^|://|^//)[^/?#@\s]*?:)[^/?#@\s]*@")


def shown_url(url: str, *, max_chars: int = 200) -> str:
    """A URL as it may appear in a message or a log: `user:***@` for any password, and cut at
    `max_chars` characters."""
    shown = url if len(url) <= max_chars else url[:max_chars] + "..."
    return _PASSWORD.sub(lambda m: f"{m.group('head')}***@", shown, count=1)

