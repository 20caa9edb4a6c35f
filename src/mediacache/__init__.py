"""mediacache: background caching of remote media URLs into object storage."""

from mediacache.domain import CacheStatus, ErrorKind
from mediacache.errors import (
    ConfigError,
    DatabaseError,
    FetchError,
    InvalidURLError,
    MediaCacheError,
    NotMigratedError,
    QueueUnavailableError,
    StorageError,
)
from mediacache.records import CacheStats, QueueStats, TikTokMedia
from mediacache.service import MediaCache

__all__ = [
    "CacheStats", "CacheStatus", "ConfigError", "DatabaseError", "ErrorKind", "FetchError", "InvalidURLError",
    "MediaCache", "MediaCacheError", "NotMigratedError", "QueueStats", "QueueUnavailableError",
    "StorageError", "TikTokMedia",
]
