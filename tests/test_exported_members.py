"""The public API: what `mediacache` exports is pinned, and every public result type and error is in it."""

from __future__ import annotations

import inspect

import mediacache
from mediacache import errors, records

EXPECTED = {
    "AssetRecord", "AssetStateError", "BackfillReport", "BatchTooLargeError", "BucketCheck", "CacheStats",
    "CacheStatus",
    "CarouselRecord", "CleanupResult", "ConfigError", "DatabaseError", "ErrorKind", "FetchError", "GcReport",
    "ImageRecord", "ImageRef", "InvalidArgumentError", "InvalidURLError", "LegacyKeyProblem", "MediaCache",
    "MediaCacheError", "MediaInfo", "NotMigratedError", "QueueOwnerMismatchError", "QueueStats",
    "QueueUnavailableError",
    "ReconcileReport", "RecordNotFoundError", "SlideRecord", "StorageError", "StorageUnavailableError",
    "SyncMediaCache", "TikTokMedia", "TikTokPostPage", "TikTokPostRecord", "TikTokProfileRecord", "UnsafeKeyError",
    "UsageGroup", "UsageReport", "WaitResult", "WebhookStats", "__version__",
}
# Raised only inside the worker and the HTTP service, never out of a public method.
INTERNAL_ERRORS = {"FinalFailureError", "LeaseHeldError", "RangeNotSatisfiableError"}


def test_all_is_pinned() -> None:
    assert set(mediacache.__all__) == EXPECTED
    assert sorted(mediacache.__all__) == list(mediacache.__all__)
    for name in mediacache.__all__:
        assert getattr(mediacache, name) is not None


def test_every_record_is_exported() -> None:
    public = {n for n, obj in vars(records).items()
              if inspect.isclass(obj) and obj.__module__ == records.__name__ and not n.startswith("_")}
    assert public - set(mediacache.__all__) == set()


def test_every_error_is_in_the_tree_and_named_so() -> None:
    classes = {n: obj for n, obj in vars(errors).items()
               if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == errors.__name__}
    for name, cls in classes.items():
        assert issubclass(cls, errors.MediaCacheError), name
        assert name.endswith("Error"), name
        assert name in errors.__doc__, f"{name} is missing from the tree drawn in errors.py"
    assert set(classes) - INTERNAL_ERRORS - set(mediacache.__all__) == set()


def test_records_read_as_attributes_and_as_a_mapping() -> None:
    stats = mediacache.CacheStats(pending=1, downloading=2, cached=3, failed=4, total=10)
    assert stats.cached == stats["cached"] == 3 and dict(stats)["total"] == 10
