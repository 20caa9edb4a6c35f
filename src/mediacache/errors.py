"""The exceptions mediacache raises; library errors are turned into these where they enter.

    MediaCacheError
    ├── ConfigError               a setting is missing, malformed or inconsistent
    ├── InvalidURLError           a URL refused before anything is written
    ├── QueueUnavailableError     Redis did not answer; nothing was queued
    ├── DatabaseError             the database did not answer or refused a query
    │   └── NotMigratedError      the schema is missing or behind: run `mediacache db upgrade`
    ├── StorageError              the object store failed or refused an operation
    │   ├── UnsafeKeyError        a key that would leave the storage root
    │   └── StorageUnavailableError  the store cannot be reached or written at start-up
    └── FetchError                a download attempt failed; `kind` says how, `retryable` whether
                                  another attempt can succeed
"""

from __future__ import annotations

from mediacache.domain import RETRYABLE_KINDS, ErrorKind


class MediaCacheError(Exception):
    """Root of every error mediacache raises on purpose."""


class ConfigError(MediaCacheError):
    """A setting is missing, malformed or inconsistent."""


class InvalidURLError(MediaCacheError):
    """A URL that is refused before anything is written."""

    def __init__(self, url: str, reason: str) -> None:
        shown = url if len(url) <= 200 else url[:200] + "..."
        super().__init__(f"refused URL {shown!r}: {reason}")
        self.url = url
        self.reason = reason
        self.kind = ErrorKind.INVALID_URL


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
    """One download attempt failed. `kind` is an ErrorKind; `retryable` says whether to try again."""

    def __init__(self, kind: ErrorKind, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS
