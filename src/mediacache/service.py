"""MediaCache: the use cases that the Python API, the command line, the HTTP service and the worker share."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

from mediacache.apptables import AppTablesMixin
from mediacache.db.engine import check_migrated, create_engine
from mediacache.db.repository import AssetRecord, AssetRepository
from mediacache.db.types import utcnow
from mediacache.domain import CacheStatus, parse_asset_id
from mediacache.errors import DatabaseError, MediaCacheError, QueueUnavailableError, StorageError
from mediacache.queue import JobQueue
from mediacache.records import CacheStats, CleanupResult, ImageRef, QueueStats, TikTokMedia
from mediacache.settings import Settings, load_settings
from mediacache.storage import ObjectStore, open_store
from mediacache.urls import validate_url

log = logging.getLogger("mediacache")

MAX_BATCH = 10_000
_CLEANUP_PAGE = 500


class MediaCache(AppTablesMixin):
    """`async with MediaCache.from_env() as cache: asset_id = await cache.cache_image(url)`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = create_engine(settings.sqlalchemy_url)
        self.repo = AssetRepository(self.engine, settings.database_display)
        self.store: ObjectStore = open_store(settings)
        self._queue: JobQueue | None = None

    @classmethod
    def from_env(cls, **overrides: Any) -> MediaCache:
        return cls(load_settings(**overrides))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    @property
    def queue(self) -> JobQueue:
        if self._queue is None:
            self._queue = JobQueue(self.settings)
        return self._queue

    async def close(self) -> None:
        if self._queue is not None:
            await self._queue.close()
            self._queue = None
        await self.store.close()
        await self.engine.dispose()

    async def check_migrated(self) -> None:
        await check_migrated(self.engine, self.settings.database_display)

    # ---- enqueue -------------------------------------------------------------------------

    async def cache_image(self, url: str) -> uuid.UUID:
        """Writes a PENDING asset, queues its download and returns its id at once."""
        return (await self.cache_images([url]))[0]

    async def cache_images(self, urls: Sequence[str]) -> list[uuid.UUID]:
        """Like cache_image for many URLs: one transaction, one addBulk, ids in input order.

        Every URL is checked before anything is written, so a bad one refuses the whole batch.
        If Redis does not answer, the rows just written are deleted again and
        QueueUnavailableError is raised: the caller gets an error, and no asset is left PENDING
        without a job.
        """
        if isinstance(urls, str):
            raise TypeError("cache_images takes a list of URLs; use cache_image for one")
        if len(urls) > MAX_BATCH:
            raise MediaCacheError(f"{len(urls)} URLs in one batch; send at most {MAX_BATCH} per call")
        checked = [str(validate_url(u)) for u in urls]
        items = [(uuid.uuid4(), u) for u in checked]
        if not items:
            return []
        await self.repo.insert_pending(items)
        try:
            if len(items) == 1:
                await self.queue.add(*items[0])
            else:
                await self.queue.add_bulk(items)
        except QueueUnavailableError:
            await self._forget([i for i, _ in items])
            raise
        return [i for i, _ in items]

    async def _forget(self, ids: list[uuid.UUID]) -> None:
        try:
            await self.repo.delete_ids(ids)
        except DatabaseError:
            # Left PENDING without a job; `mediacache reconcile` queues such assets again.
            log.exception("could not remove %d assets whose jobs were not queued", len(ids))

    async def cache_tiktok_post_media(
        self, video_url: str | None = None, cover_url: str | None = None, music_url: str | None = None,
        images: Sequence[Mapping[str, Any]] | None = None, avatar_url: str | None = None,
    ) -> TikTokMedia:
        """Queues every media URL of a TikTok post in one batch; None where a URL is missing."""
        images = list(images or [])
        urls: list[str] = []

        def slot(url: str | None) -> int | None:
            if not url:
                return None
            urls.append(url)
            return len(urls) - 1

        video, cover, music, avatar = (slot(u) for u in (video_url, cover_url, music_url, avatar_url))
        image_slots = [slot(img.get("url")) for img in images]
        ids = await self.cache_images(urls)

        def pick(i: int | None) -> uuid.UUID | None:
            return None if i is None else ids[i]

        return TikTokMedia(
            video=pick(video), cover=pick(cover), music=pick(music), avatar=pick(avatar),
            images=[ImageRef(id=pick(s), width=img.get("width"), height=img.get("height"))
                    for s, img in zip(image_slots, images, strict=True)])

    # ---- resolution ----------------------------------------------------------------------

    async def get_url(self, value: str | uuid.UUID | None, original_url: str | None = None) -> str | None:
        return (await self.get_urls([value], [original_url]))[0]

    async def get_urls(self, values: Sequence[str | uuid.UUID | None],
                       original_urls: Sequence[str | None] | None = None) -> list[str | None]:
        """Resolves many values with one database query: a CACHED asset gives its storage URL, any
        other asset its original URL, a legacy storage key its storage URL, nothing the original."""
        if original_urls is not None and len(original_urls) != len(values):
            raise ValueError(f"get_urls got {len(values)} values but {len(original_urls)} original URLs")
        originals = list(original_urls) if original_urls is not None else [None] * len(values)
        parsed = [parse_asset_id(v) for v in values]
        assets = await self.repo.resolvables([p for p in parsed if p is not None])
        ttl_s = self.settings.url_ttl_s
        out: list[str | None] = []
        for value, asset_id, original in zip(values, parsed, originals, strict=True):
            if asset_id is not None:
                asset = assets.get(asset_id)
                if asset is not None and asset.status is CacheStatus.CACHED and asset.cache_key:
                    out.append(self.store.url(asset.cache_key, ttl_s=ttl_s))
                else:
                    out.append(original or (asset.original_url if asset else None))
            elif value:
                try:
                    out.append(self.store.url(str(value), ttl_s=ttl_s))
                except StorageError:
                    # A malformed legacy key cannot name an object; fall back as for no value.
                    out.append(original)
            else:
                out.append(original)
        return out

    async def get_asset(self, asset_id: str | uuid.UUID) -> AssetRecord | None:
        parsed = parse_asset_id(asset_id)
        return None if parsed is None else await self.repo.get(parsed)

    # ---- statistics and maintenance ------------------------------------------------------

    async def queue_stats(self) -> QueueStats:
        return await self.queue.stats()

    async def cache_stats(self) -> CacheStats:
        by_status, failed_by_kind = await self.repo.counts()
        return CacheStats(
            pending=by_status[CacheStatus.PENDING], downloading=by_status[CacheStatus.DOWNLOADING],
            cached=by_status[CacheStatus.CACHED], failed=by_status[CacheStatus.FAILED],
            total=sum(by_status.values()), failed_by_kind=failed_by_kind)

    async def retry_failed(self, limit: int = 100_000) -> int:
        """FAILED assets back to PENDING with a fresh job each; returns how many."""
        moved = await self.repo.reset_failed(limit)
        if moved:
            try:
                await self.queue.requeue(moved)
            except QueueUnavailableError:
                # Undo, so the assets stay FAILED (and visible) rather than PENDING without a job.
                with contextlib.suppress(DatabaseError):
                    await self.repo.restore_failed([i for i, _ in moved],
                                                   error="retry could not be queued: Redis did not answer")
                raise
        return len(moved)

    async def cleanup(self, days: int = 30, include_referenced: bool = False) -> int:
        """Deletes settled assets older than `days` days with their stored objects; returns how many.

        Assets that an application row references are kept unless `include_referenced`;
        `cleanup_report` also says how many were kept for that reason.
        """
        return (await self.cleanup_report(days, include_referenced)).removed

    async def cleanup_report(self, days: int = 30, include_referenced: bool = False) -> CleanupResult:
        """Like cleanup: removed, kept because an application row references them, and not cleaned
        because their object could not be deleted.

        An object is deleted before its row, and a row whose object cannot be deleted is kept, so
        no row points nowhere and no object is orphaned.
        """
        if days < 0:
            raise ValueError(f"cleanup(days={days}): days must be 0 or more")
        cutoff = utcnow() - timedelta(days=days)
        kept_referenced = await self._count_kept_referenced(cutoff, include_referenced)
        removed = 0
        skip: list[uuid.UUID] = []
        while True:
            page = await self._cleanup_page(cutoff, _CLEANUP_PAGE, skip, include_referenced)
            if not page:
                return CleanupResult(removed=removed, kept_referenced=kept_referenced, not_cleaned=len(skip))
            deletable: list[uuid.UUID] = []
            for asset_id, key in page:
                try:
                    if key:
                        await self.store.delete(key)
                    deletable.append(asset_id)
                except StorageError as exc:
                    log.warning("kept asset %s: its object %s could not be deleted: %s", asset_id, key, exc)
                    skip.append(asset_id)
            removed += await self.repo.delete_settled(deletable)
            with contextlib.suppress(QueueUnavailableError):
                await self.queue.remove(deletable)

    # ---- figures for the HTTP service's dashboard and metrics ----------------------------

    async def recent_failures(self, limit: int = 20) -> list[AssetRecord]:
        """FAILED assets, the most recently failed first."""
        return await self.repo.recent_failures(limit)

    async def throughput(self, window_s: int = 600, bucket_s: int = 10) -> list[tuple[int, int]]:
        """(bucket start in unix seconds, assets cached in it) for the last `window_s`, oldest first,
        with empty buckets as zeros."""
        now_s = int(utcnow().timestamp())
        last = now_s - now_s % bucket_s
        first = last - (window_s // bucket_s - 1) * bucket_s
        counts = await self.repo.cached_per_bucket(datetime.fromtimestamp(first, UTC), bucket_s)
        return [(start, counts.get(start, 0)) for start in range(first, last + 1, bucket_s)]

    async def stored_bytes(self) -> int:
        """The total size of the stored objects of CACHED assets."""
        return await self.repo.stored_bytes()
