"""SyncMediaCache: MediaCache for synchronous code (Django, Flask, Celery), safe to share between threads.

A MediaCache belongs to the event loop that first used it (its connection pools do), so reusing one
across `asyncio.run()` calls fails with "attached to a different loop". SyncMediaCache owns one event
loop, run by a daemon thread, and one MediaCache on it; every method submits its coroutine to that
loop and waits for the result. Calls from many threads interleave on the one loop, as concurrent
tasks of an async application would. Every method takes the parameters of its async twin but the
progress callbacks (`on_progress`, ...), which would run on the loop's thread rather than the caller's.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Coroutine, Mapping, Sequence
from concurrent.futures import Future
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

from mediacache.apptables.backfill import DEFAULT_BATCH_ROWS
from mediacache.broker.owner import Role
from mediacache.errors import InvalidArgumentError, MediaCacheError
from mediacache.fetching.host_limiter import HostState
from mediacache.records import (
    AssetRecord,
    BackfillReport,
    CacheStats,
    CarouselRecord,
    CleanupResult,
    GcReport,
    MediaInfo,
    QueueStats,
    ReconcileReport,
    TikTokMedia,
    TikTokPostPage,
    TikTokPostRecord,
    UsageReport,
    WaitResult,
    WebhookStats,
)
from mediacache.service import RETRY_BATCH, MediaCache
from mediacache.settings import Settings, load_settings

T = TypeVar("T")
CLOSE_TIMEOUT_S = 30.0


class SyncMediaCache:
    """`cache = SyncMediaCache.from_env(); asset_id = cache.cache_image(url)`; `cache.close()` at exit.

    Create one per process (at start-up, or lazily behind a lock) and share it: each instance runs
    a thread and holds its own database and Redis connections. Also a context manager.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mediacache-sync", daemon=True)
        self._thread.start()
        self._closed = False
        self._close_lock = threading.Lock()

        async def build() -> MediaCache:
            # Built on the loop that will use it, so every pool it creates belongs to that loop.
            return MediaCache(settings)

        try:
            self._cache = self._submit(build())
        except BaseException:
            self._stop_loop()
            raise

    @classmethod
    def from_env(cls, **overrides: Any) -> SyncMediaCache:
        return cls(load_settings(**overrides))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connections and stops the thread; later calls raise MediaCacheError."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._cache.close(), self._loop).result(CLOSE_TIMEOUT_S)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CLOSE_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()

    def _submit(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            # Waiting here for the loop that runs us would wait for ever.
            raise InvalidArgumentError("SyncMediaCache was called from its own event loop; in async code "
                                       "use MediaCache and await its methods")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise MediaCacheError("this SyncMediaCache is closed; create a new one")
        return self._submit(coro)

    # ---- the methods of MediaCache, synchronous ------------------------------------------

    def cache_image(self, url: str) -> uuid.UUID:
        return self._call(self._cache.cache_image(url))

    def cache_images(self, urls: Sequence[str]) -> list[uuid.UUID]:
        return self._call(self._cache.cache_images(urls))

    def cache_tiktok_post_media(
        self, video_url: str | None = None, cover_url: str | None = None, music_url: str | None = None,
        images: Sequence[Mapping[str, Any]] | None = None, avatar_url: str | None = None,
    ) -> TikTokMedia:
        return self._call(self._cache.cache_tiktok_post_media(video_url, cover_url, music_url, images, avatar_url))

    def get_url(self, value: str | uuid.UUID | None, original_url: str | None = None, *, width: int | None = None,
                poster: bool = False) -> str | None:
        return self._call(self._cache.get_url(value, original_url, width=width, poster=poster))

    def get_urls(self, values: Sequence[str | uuid.UUID | None],
                 original_urls: Sequence[str | None] | None = None, *, width: int | None = None,
                 poster: bool = False, legacy_must_exist: bool = False) -> list[str | None]:
        return self._call(self._cache.get_urls(values, original_urls, width=width, poster=poster,
                                               legacy_must_exist=legacy_must_exist))

    def get_asset(self, asset_id: str | uuid.UUID) -> AssetRecord | None:
        return self._call(self._cache.get_asset(asset_id))

    def get_assets(self, asset_ids: Sequence[str | uuid.UUID]) -> dict[uuid.UUID, AssetRecord]:
        return self._call(self._cache.get_assets(asset_ids))

    def has_object(self, key: str) -> bool:
        return self._call(self._cache.has_object(key))

    def queue_stats(self) -> QueueStats:
        return self._call(self._cache.queue_stats())

    def cache_stats(self) -> CacheStats:
        return self._call(self._cache.cache_stats())

    def retry_failed(self, limit: int = 100_000, *, batch_size: int = RETRY_BATCH) -> int:
        return self._call(self._cache.retry_failed(limit, batch_size=batch_size))

    def cleanup(self, days: int = 30, include_referenced: bool = False) -> int:
        return self._call(self._cache.cleanup(days, include_referenced))

    def cleanup_report(self, days: int = 30, include_referenced: bool = False, *,
                       busy_share: float = 1.0) -> CleanupResult:
        return self._call(self._cache.cleanup_report(days, include_referenced, busy_share=busy_share))

    def reconcile(self, *, min_age_s: float = 60.0, check_objects: bool = False,
                  requeue_missing: bool = False) -> ReconcileReport:
        return self._call(self._cache.reconcile(min_age_s=min_age_s, check_objects=check_objects,
                                                requeue_missing=requeue_missing))

    def collect_garbage(self, *, dry_run: bool = True) -> GcReport:
        return self._call(self._cache.collect_garbage(dry_run=dry_run))

    def check_migrated(self) -> None:
        self._call(self._cache.check_migrated())

    def ping_queue(self) -> None:
        self._call(self._cache.ping_queue())

    def ping_storage(self) -> None:
        self._call(self._cache.ping_storage())

    def recent_failures(self, limit: int = 20) -> list[AssetRecord]:
        return self._call(self._cache.recent_failures(limit))

    def throughput(self, window_s: int = 600, bucket_s: int = 10) -> list[tuple[int, int]]:
        return self._call(self._cache.throughput(window_s, bucket_s))

    def stored_bytes(self) -> int:
        return self._call(self._cache.stored_bytes())

    def save_tiktok_post(
        self, *, tiktok_id: str, username: str, description: str | None = None,
        posted_at: datetime | None = None, video_url: str | None = None, cover_url: str | None = None,
        music_url: str | None = None, images: Sequence[Mapping[str, Any]] = (), avatar_url: str | None = None,
        nickname: str | None = None, tiktok_user_id: str | None = None,
    ) -> TikTokPostRecord:
        return self._call(self._cache.save_tiktok_post(
            tiktok_id=tiktok_id, username=username, description=description, posted_at=posted_at,
            video_url=video_url, cover_url=cover_url, music_url=music_url, images=images, avatar_url=avatar_url,
            nickname=nickname, tiktok_user_id=tiktok_user_id))

    def get_tiktok_post(self, post_id: int) -> TikTokPostRecord | None:
        return self._call(self._cache.get_tiktok_post(post_id))

    def list_tiktok_posts(self, limit: int = 20, cursor: int | None = None,
                          username: str | None = None) -> TikTokPostPage:
        return self._call(self._cache.list_tiktok_posts(limit, cursor, username))

    def save_carousel(
        self, *, title: str | None = None, author_name: str | None = None, author_avatar_url: str | None = None,
        images: Sequence[Mapping[str, Any]] = (), slides: Sequence[Mapping[str, Any]] = (),
        carousel_id: int | None = None,
    ) -> CarouselRecord:
        return self._call(self._cache.save_carousel(title=title, author_name=author_name,
                                                    author_avatar_url=author_avatar_url, images=images,
                                                    slides=slides, carousel_id=carousel_id))

    def get_carousel(self, carousel_id: int) -> CarouselRecord | None:
        return self._call(self._cache.get_carousel(carousel_id))

    def backfill_legacy_keys(self, *, dry_run: bool = False, batch_rows: int = DEFAULT_BATCH_ROWS) -> BackfillReport:
        # Progress callbacks would run on the loop's thread; the synchronous form goes without them.
        return self._call(self._cache.backfill_legacy_keys(dry_run=dry_run, batch_rows=batch_rows))

    # ---- second-wave use cases ---------------------------------------------------------------

    def refresh_source(self, asset_id: str | uuid.UUID, url: str) -> AssetRecord:
        return self._call(self._cache.refresh_source(asset_id, url))

    def wait(self, asset_ids: Sequence[str | uuid.UUID], timeout_s: float = 30.0) -> WaitResult:
        return self._call(self._cache.wait(asset_ids, timeout_s))

    def trim(self, max_bytes: int) -> int:
        return self._call(self._cache.trim(max_bytes))

    def usage(self, *, check_bucket: bool = False) -> UsageReport:
        return self._call(self._cache.usage(check_bucket=check_bucket))

    def derive(self, *, missing: bool = True, since_days: float | None = None, batch_size: int = 500) -> int:
        return self._call(self._cache.derive(missing=missing, since_days=since_days, batch_size=batch_size))

    def resolve_media(self, values: Sequence[str | uuid.UUID | None],
                      original_urls: Sequence[str | None]) -> list[tuple[str | None, MediaInfo | None]]:
        return self._call(self._cache.resolve_media(values, original_urls))

    def host_states(self, limit: int = 50) -> list[HostState]:
        return self._call(self._cache.host_states(limit))

    def webhook_stats(self) -> WebhookStats:
        return self._call(self._cache.webhook_stats())

    def dedup_savings(self) -> tuple[int, int]:
        return self._call(self._cache.dedup_savings())

    def bind_queue(self, role: Role = "producer") -> None:
        """Checks (and at first use records) that the queue belongs to this database."""
        return self._call(self._cache.bind_queue(role))

    def check_storage_placement(self) -> None:
        return self._call(self._cache.check_storage_placement())
