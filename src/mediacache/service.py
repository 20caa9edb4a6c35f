"""MediaCache: the use cases that the Python API, the command line, the HTTP service and the worker share."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from sqlalchemy.ext.asyncio import AsyncEngine

from mediacache.apptables.backfill import DEFAULT_BATCH_ROWS
from mediacache.apptables.service import AppTables
from mediacache.broker.jobs import JobQueue
from mediacache.db.columns import utcnow
from mediacache.db.engine import create_engine
from mediacache.db.repository import AssetRepository
from mediacache.db.schema import check_migrated
from mediacache.domain import CacheStatus, parse_asset_id
from mediacache.errors import (
    BatchTooLargeError,
    DatabaseError,
    InvalidArgumentError,
    QueueUnavailableError,
    StorageError,
)
from mediacache.events.bus import EventBus
from mediacache.events.outbox import OutboxRepository
from mediacache.events.waiting import AssetWatcher
from mediacache.fetching.urls import validate_url
from mediacache.maintenance import cleanup, orphans, reconcile
from mediacache.records import (
    AssetRecord,
    BackfillReport,
    CacheStats,
    CarouselRecord,
    CleanupResult,
    GcReport,
    ImageRef,
    QueueStats,
    ReconcileReport,
    TikTokMedia,
    TikTokPostPage,
    TikTokPostRecord,
    WaitResult,
    WebhookStats,
)
from mediacache.settings import Settings, load_settings
from mediacache.storage import ObjectStore, open_store
from mediacache.storage.existing import stored_keys

log = logging.getLogger("mediacache")

MAX_BATCH = 10_000
RETRY_BATCH = 1000


class Backends:
    """The connections one MediaCache owns: database engine, asset repository, store and queue.

    The worker and the HTTP service of this package run on the same ones as the cache they are
    given (`cache.backends`), so a process holds one pool of each. Applications use the methods
    of MediaCache, never these.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: AsyncEngine = create_engine(settings.sqlalchemy_url, pgbouncer=settings.db_pgbouncer)
        self.assets = AssetRepository(self.engine, settings.database_display, settings.webhook_url_list)
        self.outbox = OutboxRepository(self.engine, settings.database_display)
        self.store: ObjectStore = open_store(settings)
        self._queue: JobQueue | None = None
        self._bus: EventBus | None = None
        self._watcher: AssetWatcher | None = None

    @property
    def bus(self) -> EventBus:
        """Announcements of final outcomes on Redis pub/sub; created on first use like the queue."""
        if self._bus is None:
            self._bus = EventBus(self.settings)
        return self._bus

    @property
    def watcher(self) -> AssetWatcher:
        """The one reader every waiter of this process shares."""
        if self._watcher is None:
            self._watcher = AssetWatcher(self.assets, self.bus)
        return self._watcher

    @property
    def queue(self) -> JobQueue:
        # Created on first use: resolving URLs or reading statistics needs no Redis.
        if self._queue is None:
            self._queue = JobQueue(self.settings)
        return self._queue

    async def close(self) -> None:
        if self._watcher is not None:
            await self._watcher.close()
            self._watcher = None
        if self._bus is not None:
            await self._bus.close()
            self._bus = None
        if self._queue is not None:
            await self._queue.close()
            self._queue = None
        await self.store.close()
        await self.engine.dispose()


class MediaCache:
    """`async with MediaCache.from_env() as cache: asset_id = await cache.cache_image(url)`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._backends = Backends(settings)
        self._apps = AppTables(self, self._backends.engine, self._backends.store)

    @classmethod
    def from_env(cls, **overrides: Any) -> MediaCache:
        return cls(load_settings(**overrides))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    @property
    def backends(self) -> Backends:
        """The connections of this cache, for the worker and HTTP service of this package."""
        return self._backends

    async def close(self) -> None:
        await self._backends.close()

    # ---- readiness -----------------------------------------------------------------------

    async def check_migrated(self) -> None:
        """Raises NotMigratedError (or DatabaseError) unless the schema is at this version's revision."""
        await check_migrated(self._backends.engine, self.settings.database_display)

    async def check_storage_placement(self) -> None:
        """Raises ConfigError when local storage cannot serve this database's assets (a second
        machine on local storage, or the wrong data directory); see `storage.placement`."""
        from mediacache.storage.placement import check_local_store_holds_its_assets

        b = self._backends
        await check_local_store_holds_its_assets(self.settings, b.assets, b.store)

    async def ping_queue(self) -> None:
        """Raises QueueUnavailableError unless Redis answers."""
        await self._backends.queue.ping()

    async def ping_storage(self) -> None:
        """Raises StorageError unless the store answers (a HEAD of a key no object has)."""
        await self._backends.store.head("mediacache-readyz-probe")

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
            raise InvalidArgumentError("cache_images takes a list of URLs; use cache_image for one")
        if len(urls) > MAX_BATCH:
            raise BatchTooLargeError("URLs", len(urls), MAX_BATCH)
        checked = [str(validate_url(u)) for u in urls]
        items = [(uuid.uuid4(), u) for u in checked]
        if not items:
            return []
        await self._backends.assets.insert_pending(items)
        try:
            if len(items) == 1:
                await self._backends.queue.add(*items[0])
            else:
                await self._backends.queue.add_bulk(items)
        except QueueUnavailableError:
            await self._forget([i for i, _ in items])
            raise
        return [i for i, _ in items]

    async def _forget(self, ids: list[uuid.UUID]) -> None:
        try:
            await self._backends.assets.delete_ids(ids)
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
                       original_urls: Sequence[str | None] | None = None, *,
                       legacy_must_exist: bool = False) -> list[str | None]:
        """Resolves many values with one database query: a CACHED asset gives its storage URL, any
        other asset its original URL, a legacy storage key its storage URL, nothing the original.

        With `legacy_must_exist` (what the HTTP API asks for, since its callers name keys
        freely), a legacy key is signed only when an object is stored under it: one HEAD per
        distinct legacy key, LEGACY_HEAD_CONCURRENCY at a time; asset ids never cost a HEAD.
        A key with no object resolves as no value does, to its original URL or None.
        """
        if original_urls is not None and len(original_urls) != len(values):
            raise InvalidArgumentError(
                f"get_urls got {len(values)} values but {len(original_urls)} original URLs; give one "
                "original URL (or None) per value")
        originals = list(original_urls) if original_urls is not None else [None] * len(values)
        parsed = [parse_asset_id(v) for v in values]
        assets = await self._backends.assets.resolvables([p for p in parsed if p is not None])
        store = self._backends.store
        ttl_s = self.settings.url_ttl_s
        legacy = {str(v) for v, p in zip(values, parsed, strict=True) if p is None and v}
        stored = await stored_keys(store, legacy) if legacy_must_exist else legacy
        out: list[str | None] = []
        for value, asset_id, original in zip(values, parsed, originals, strict=True):
            if asset_id is not None:
                asset = assets.get(asset_id)
                if asset is not None and asset.status is CacheStatus.CACHED and asset.cache_key:
                    out.append(store.url(asset.cache_key, ttl_s=ttl_s))
                else:
                    out.append(original or (asset.original_url if asset else None))
            elif value and str(value) in stored:
                try:
                    out.append(store.url(str(value), ttl_s=ttl_s))
                except StorageError:
                    # A malformed legacy key cannot name an object; fall back as for no value.
                    out.append(original)
            else:
                out.append(original)
        return out

    async def get_asset(self, asset_id: str | uuid.UUID) -> AssetRecord | None:
        parsed = parse_asset_id(asset_id)
        return None if parsed is None else await self._backends.assets.get(parsed)

    async def get_assets(self, asset_ids: Sequence[str | uuid.UUID]) -> dict[uuid.UUID, AssetRecord]:
        """The records of the assets that exist among `asset_ids`, in one query; others are left out."""
        parsed = {p for p in (parse_asset_id(v) for v in asset_ids) if p is not None}
        return await self._backends.assets.get_many(sorted(parsed))

    async def wait(self, asset_ids: Sequence[str | uuid.UUID], timeout_s: float = 30.0) -> WaitResult:
        """Returns once every asset is final (CACHED, FAILED, or gone) or after `timeout_s`.

        `records` come in input order; `not_final` lists what was still on its way when the time ran
        out. Waiting costs no polling loop: waiters are woken by the workers' announcements on Redis,
        and every waiter of the process shares one database read per wake-up (and one every 5 s in
        case an announcement was lost).
        """
        if isinstance(asset_ids, str | uuid.UUID):
            raise InvalidArgumentError("wait takes a list of asset ids; wrap a single id in a list")
        if timeout_s < 0:
            raise InvalidArgumentError(f"wait(timeout_s={timeout_s!r}): the timeout must be 0 s or more")
        parsed: list[uuid.UUID] = []
        for value in asset_ids:
            asset_id = parse_asset_id(value)
            if asset_id is None:
                raise InvalidArgumentError(f"wait got {value!r}, which is not an asset id (a UUID)")
            parsed.append(asset_id)
        if not parsed:
            return WaitResult(records=[], not_final=[])
        return await self._backends.watcher.wait(parsed, timeout_s)

    # ---- statistics and maintenance ------------------------------------------------------

    async def queue_stats(self) -> QueueStats:
        return await self._backends.queue.stats()

    async def cache_stats(self) -> CacheStats:
        by_status, failed_by_kind = await self._backends.assets.counts()
        return CacheStats(
            pending=by_status[CacheStatus.PENDING], downloading=by_status[CacheStatus.DOWNLOADING],
            cached=by_status[CacheStatus.CACHED], failed=by_status[CacheStatus.FAILED],
            total=sum(by_status.values()), failed_by_kind=failed_by_kind)

    async def retry_failed(self, limit: int = 100_000, *, batch_size: int = RETRY_BATCH,
                           on_progress: Callable[[int], None] | None = None) -> int:
        """FAILED assets back to PENDING with a fresh job each; returns how many.

        Works in batches of `batch_size`: each is one short transaction and one addBulk, so a
        hundred thousand failures never sit in one statement or one Redis call. A batch whose jobs
        cannot be queued is put back to FAILED and QueueUnavailableError is raised; the batches
        before it stay retried.
        """
        assets, queue = self._backends.assets, self._backends.queue
        retried = 0
        while retried < limit:
            moved = await assets.reset_failed(min(batch_size, limit - retried))
            if not moved:
                break
            try:
                await queue.requeue(moved)
            except QueueUnavailableError:
                # Undo, so the assets stay FAILED (and visible) rather than PENDING without a job.
                with contextlib.suppress(DatabaseError):
                    await assets.restore_failed([i for i, _ in moved],
                                                error="retry could not be queued: Redis did not answer")
                raise
            retried += len(moved)
            if on_progress is not None:
                on_progress(len(moved))
        return retried

    async def cleanup(self, days: int = 30, include_referenced: bool = False) -> int:
        """Deletes settled assets older than `days` days with their stored objects; returns how many.

        The short form of `cleanup_report`, which also says what was kept and why.
        """
        return (await self.cleanup_report(days, include_referenced)).removed

    async def cleanup_report(self, days: int = 30, include_referenced: bool = False, *,
                             on_progress: Callable[[int], None] | None = None) -> CleanupResult:
        """Deletes settled assets older than `days` days: removed, kept because an application row
        references them (unless `include_referenced`), and not cleaned because their object could
        not be deleted (see `maintenance.cleanup`)."""
        if isinstance(days, bool) or not isinstance(days, int) or days < 0:
            raise InvalidArgumentError(f"cleanup(days={days!r}): days must be a whole number, 0 or more")
        return await cleanup.remove_settled(
            self._backends.assets, self._backends.store, self._backends.queue, days=days,
            referenced=None if include_referenced else self._apps.referenced, on_progress=on_progress)

    async def reconcile(self, *, min_age_s: float = 60.0, check_objects: bool = False,
                        requeue_missing: bool = False) -> ReconcileReport:
        """Queues again PENDING/DOWNLOADING assets whose job was lost; with `check_objects`, also
        reports CACHED assets whose object is gone, and with `requeue_missing` caches them again."""
        b = self._backends
        return await reconcile.reconcile(b.assets, b.store, b.queue, min_age_s=min_age_s,
                                         check_objects=check_objects, requeue_missing=requeue_missing)

    async def collect_garbage(self, *, dry_run: bool = True) -> GcReport:
        """Finds (and unless `dry_run`, deletes) stored objects that no asset owns; reports assets
        whose object is missing (see `maintenance.orphans`)."""
        return await orphans.collect(self._backends.assets, self._backends.store, dry_run=dry_run)

    # ---- figures for the HTTP service's dashboard and metrics ----------------------------

    async def recent_failures(self, limit: int = 20) -> list[AssetRecord]:
        """FAILED assets, the most recently failed first."""
        return await self._backends.assets.recent_failures(limit)

    async def throughput(self, window_s: int = 600, bucket_s: int = 10) -> list[tuple[int, int]]:
        """(bucket start in unix seconds, assets cached in it) for the last `window_s`, oldest first,
        with empty buckets as zeros."""
        now_s = int(utcnow().timestamp())
        last = now_s - now_s % bucket_s
        first = last - (window_s // bucket_s - 1) * bucket_s
        counts = await self._backends.assets.cached_per_bucket(datetime.fromtimestamp(first, UTC), bucket_s)
        return [(start, counts.get(start, 0)) for start in range(first, last + 1, bucket_s)]

    async def webhook_stats(self) -> WebhookStats:
        """Webhook deliveries still pending and those given up on (dead), in one query."""
        return await self._backends.outbox.counts()

    async def stored_bytes(self) -> int:
        """The total size of the stored objects of CACHED assets."""
        return await self._backends.assets.stored_bytes()

    # ---- the application tables (see `apptables.service`) --------------------------------

    async def save_tiktok_post(
        self, *, tiktok_id: str, username: str, description: str | None = None,
        posted_at: datetime | None = None, video_url: str | None = None, cover_url: str | None = None,
        music_url: str | None = None, images: Sequence[Mapping[str, Any]] = (), avatar_url: str | None = None,
        nickname: str | None = None, tiktok_user_id: str | None = None,
    ) -> TikTokPostRecord:
        """Upserts a TikTok post and its author's profile, queueing its media in one batch."""
        return await self._apps.save_tiktok_post(
            tiktok_id=tiktok_id, username=username, description=description, posted_at=posted_at,
            video_url=video_url, cover_url=cover_url, music_url=music_url, images=images, avatar_url=avatar_url,
            nickname=nickname, tiktok_user_id=tiktok_user_id)

    async def get_tiktok_post(self, post_id: int) -> TikTokPostRecord | None:
        return await self._apps.get_tiktok_post(post_id)

    async def list_tiktok_posts(self, limit: int = 20, cursor: int | None = None,
                                username: str | None = None) -> TikTokPostPage:
        return await self._apps.list_tiktok_posts(limit=limit, cursor=cursor, username=username)

    async def save_carousel(
        self, *, title: str | None = None, author_name: str | None = None, author_avatar_url: str | None = None,
        images: Sequence[Mapping[str, Any]] = (), slides: Sequence[Mapping[str, Any]] = (),
        carousel_id: int | None = None,
    ) -> CarouselRecord:
        """Creates a carousel (no `carousel_id`) or replaces one's data, images and slides."""
        return await self._apps.save_carousel(title=title, author_name=author_name,
                                              author_avatar_url=author_avatar_url, images=images, slides=slides,
                                              carousel_id=carousel_id)

    async def get_carousel(self, carousel_id: int) -> CarouselRecord | None:
        return await self._apps.get_carousel(carousel_id)

    async def backfill_legacy_keys(self, *, dry_run: bool = False, batch_rows: int = DEFAULT_BATCH_ROWS,
                                   on_total: Callable[[int], None] | None = None,
                                   on_advance: Callable[[int], None] | None = None) -> BackfillReport:
        """Turns every legacy storage key in a `*_key` column into a CACHED asset's id."""
        return await self._apps.backfill_legacy_keys(dry_run=dry_run, batch_rows=batch_rows,
                                                     on_total=on_total, on_advance=on_advance)
