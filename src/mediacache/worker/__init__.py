"""The worker: the cache-media job handler, the BullMQ runner around it, and the multi-process supervisor."""

from mediacache.worker.runner import CacheWorker

__all__ = ["CacheWorker"]
