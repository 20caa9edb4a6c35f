"""MediaCache: the use cases that the Python API, the command line, the HTTP service and the worker share."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

from mediacache.apptables.backfill import DEFAULT_BATCH_ROWS
from mediacache.apptables.service import AppTables
from mediacache.backends import Backends
from mediacache.broker.owner import Role
from mediacache.db.columns import utcnow
from mediacache.db.repository import Request
from mediacache.db.schema import check_migrated
from mediacache.domain import CacheStatus, MediaState, parse_asset_id
from mediacache.errors import (
    AssetStateError,
    BatchTooLargeError,
    DatabaseError,
    InvalidArgumentError,
    QueueUnavailableError,
    RecordNotFoundError,
    UnsafeKeyError,
)
from mediacache.fetching.expiry import expires_later
from mediacache.fetching.host_limiter import HostLimiterUnavailable, HostState
from mediacache.fetching.source_key import source_key
from mediacache.fetching.urls import validate_url
from mediacache.maintenance import cleanup, orphans, reconcile, trim, usage
from mediacache.records import (
    AssetRecord,
    BackfillReport,
    CacheStats,
    CarouselRecord,
    CleanupResult,
    GcReport,
    ImageRef,
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
from mediacache.settings import Settings, load_settings
from mediacache.storage.existing import stored_keys
from mediacache.storage.resolution import UrlResolver

log = logging.getLogger("mediacache")

MAX_BATCH = 10_000
# cache_stats().at_risk counts PENDING assets whose source link expires within this long.
AT_RISK_S = 15 * 60
RETRY_BATCH = 1000


class MediaCache:
    """`async with MediaCache.from_env() as cache: asset_id = await cache.cache_image(url)`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._backends = Backends(settings)
        self._apps = AppTables(self, self._backends.engine, self._backends.store)
        self._resolver = UrlResolver(self._backends.store, settings.url_ttl_s)

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

    async def bind_queue(self, role: Role = "producer") -> None:
        """Refuses (QueueOwnerMismatchError) a queue that another database's deployment uses; at
        first use, records this database as the queue's. Enqueueing does this by itself, once."""
        await self._backends.queue.bind(role)

    async def ping_storage(self) -> None:
        """Raises StorageError unless the store answers (a HEAD of a key no object has)."""
        await self._backends.store.head("mediacache-readyz-probe")

    # ---- enqueue -------------------------------------------------------------------------

    async def cache_image(self, url: str) -> uuid.UUID:
        """Writes a PENDING asset, queues its download and returns its id at once; a URL whose
        source key has a live asset returns that asset's id and writes nothing new (see cache_images)."""
        return (await self.cache_images([url]))[0]

    async def cache_images(self, urls: Sequence[str]) -> list[uuid.UUID]:
        """Like cache_image for many URLs: one insert, one addBulk, ids in input order.

        Deduplication (MEDIACACHE_DEDUP, on by default): URLs with the same source key (the URL
        without its signing parameters, see `fetching.source_key`) get the id of the live
        (PENDING, DOWNLOADING or CACHED) asset that has it, here or in any other process, and
        nothing new is queued for them; duplicates within the batch get the same id. A FAILED
        asset is not reused: the next request for its URL makes a new asset, so a failure never
        sticks to a URL (retry_failed revives the old one).

        Every URL is checked before anything is written, so a bad one refuses the whole batch.
        The first call checks that the queue belongs to this database (QueueOwnerMismatchError
        otherwise). If Redis does not answer, the rows just written are deleted again and
        QueueUnavailableError is raised: the caller gets an error, and no asset is left PENDING
        without a job.
        """
        if isinstance(urls, str):
            raise InvalidArgumentError("cache_images takes a list of URLs; use cache_image for one")
        if len(urls) > MAX_BATCH:
            raise BatchTooLargeError("URLs", len(urls), MAX_BATCH)
        checked = [str(validate_url(u)) for u in urls]
        if not checked:
            return []
        # Before anything is written: a queue of another deployment refuses, and no row is left
        # PENDING without a job. Once per MediaCache; later calls skip it.
        await self._backends.queue.ensure_bound()
        if not self.settings.dedup:
            items = [(uuid.uuid4(), u) for u in checked]
            await self._backends.assets.insert_pending(items)
            await self._queue_or_forget(items)
            return [i for i, _ in items]
        rules = self.settings.source_key_rules
        keys = [source_key(u, rules) for u in checked]
        # One request per source key; of several links to one file in the batch, the one that
        # expires last is the one to download.
        chosen: dict[str, str] = {}
        for key, url in zip(keys, checked, strict=True):
            best = chosen.get(key)
            if best is None or expires_later(url, best):
                chosen[key] = url
        found, created = await self._backends.assets.insert_or_find(
            [Request(uuid.uuid4(), url, key) for key, url in chosen.items()])
        await self._queue_or_forget([(r.new_id, r.url) for r in created])
        return [found[k] for k in keys]

    async def _queue_or_forget(self, items: list[tuple[uuid.UUID, str]]) -> None:
        """Queues the downloads of new assets; if Redis does not answer, deletes them again."""
        if not items:
            return
        try:
            if len(items) == 1:
                await self._backends.queue.add(*items[0])
            else:
                await self._backends.queue.add_bulk(items)
        except QueueUnavailableError:
            await self._forget([i for i, _ in items])
            raise

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

    async def get_url(self, value: str | uuid.UUID | None, original_url: str | None = None, *,
                      width: int | None = None, poster: bool = False) -> str | None:
        return (await self.get_urls([value], [original_url], width=width, poster=poster))[0]

    async def get_urls(self, values: Sequence[str | uuid.UUID | None],
                       original_urls: Sequence[str | None] | None = None, *, width: int | None = None,
                       poster: bool = False, legacy_must_exist: bool = False) -> list[str | None]:
        """Resolves many values with one database query: a CACHED asset gives its storage URL, any
        other asset its original URL, a legacy storage key its storage URL, nothing the original.

        With `width`, a CACHED asset gives its narrowest thumbnail at least that wide, and the
        original where it has none (not made yet, refused, not an image, or all narrower); with
        `poster`, a video's poster instead (the widest one unless `width` is given).

        With `legacy_must_exist` (what the HTTP API asks for, since its callers name keys
        freely), a legacy key is signed only when an object is stored under it: one HEAD per
        distinct legacy key, LEGACY_HEAD_CONCURRENCY at a time; asset ids never cost a HEAD.
        A key with no object resolves as no value does, to its original URL or None.
        """
        if original_urls is not None and len(original_urls) != len(values):
            raise InvalidArgumentError(
                f"get_urls got {len(values)} values but {len(original_urls)} original URLs; give one "
                "original URL (or None) per value")
        if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width < 1):
            raise InvalidArgumentError(f"get_urls(width={width!r}): width must be a whole number of pixels, 1 or more")
        originals = list(original_urls) if original_urls is not None else [None] * len(values)
        parsed = [parse_asset_id(v) for v in values]
        ids = [p for p in parsed if p is not None]
        sized = width is not None or poster
        # Without a size the lean query; with one, the same single query joined to the derivatives.
        assets: Mapping[uuid.UUID, Any] = (await self._backends.media.resolvables(ids) if sized
                                           else await self._backends.assets.resolvables(ids))
        legacy = {str(v) for v, p in zip(values, parsed, strict=True) if p is None and v}
        stored = await stored_keys(self._backends.store, legacy) if legacy_must_exist else legacy
        return self._resolver.urls(values, parsed, originals, assets, stored,
                          kind="poster" if poster else "thumb", width=width, sized=sized)

    async def has_object(self, key: str) -> bool:
        """Whether an object is stored under the storage key `key` (False for a key that is not safe)."""
        try:
            return await self._backends.store.head(key) is not None
        except UnsafeKeyError:
            return False

    async def resolve_media(self, values: Sequence[str | uuid.UUID | None],
                            original_urls: Sequence[str | None]) -> list[tuple[str | None, MediaInfo | None]]:
        """Like get_urls, with each slot's metadata and thumbnail URLs (None for legacy keys and
        assets not derived yet); one database query for any number of values."""
        if len(original_urls) != len(values):
            raise InvalidArgumentError(
                f"resolve_media got {len(values)} values but {len(original_urls)} original URLs; give one "
                "original URL (or None) per value")
        parsed = [parse_asset_id(v) for v in values]
        assets = await self._backends.media.resolvables([p for p in parsed if p is not None])
        legacy = {str(v) for v, p in zip(values, parsed, strict=True) if p is None and v}
        urls = self._resolver.urls(values, parsed, original_urls, assets, legacy, kind="thumb", width=None, sized=False)
        out: list[tuple[str | None, MediaInfo | None]] = []
        for url, asset_id in zip(urls, parsed, strict=True):
            asset = assets.get(asset_id) if asset_id is not None else None
            out.append((url, self._resolver.media_info(asset) if asset is not None else None))
        return out

    async def get_asset(self, asset_id: str | uuid.UUID) -> AssetRecord | None:
        """The asset's record, with its metadata and derivatives (each with a URL to fetch it by)."""
        parsed = parse_asset_id(asset_id)
        if parsed is None:
            return None
        rec = await self._backends.assets.get(parsed)
        if rec is None or rec.media_state is None:
            return rec
        rows = (await self._backends.media.derivatives_of([parsed])).get(parsed, [])
        return dataclasses.replace(rec, derivatives=[
            {"kind": d.kind, "width": d.width, "height": d.height, "content_type": d.content_type,
             "url": self._resolver.derivative_url(d)} for d in rows])

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
        assets = self._backends.assets
        by_status, failed_by_kind, at_risk = await assets.reports.counts(expiring_within_s=AT_RISK_S)
        return CacheStats(
            pending=by_status[CacheStatus.PENDING], downloading=by_status[CacheStatus.DOWNLOADING],
            cached=by_status[CacheStatus.CACHED], failed=by_status[CacheStatus.FAILED],
            total=sum(by_status.values()), failed_by_kind=failed_by_kind, at_risk=at_risk)

    async def host_states(self, limit: int = 50) -> list[HostState]:
        """The per-host limiter's view of the `limit` most recently used hosts: breaker state, current
        rate, permits in use, pauses. Raises QueueUnavailableError when Redis does not answer."""
        try:
            return await self._backends.host_limiter.snapshot(limit=limit)
        except HostLimiterUnavailable as exc:
            raise QueueUnavailableError(f"{exc}; check that Redis at {self.settings.redis_display} is running") from exc

    async def refresh_source(self, asset_id: str | uuid.UUID, url: str) -> AssetRecord:
        """Gives an asset that is not CACHED a new source URL (a freshly signed link for the same
        media), resets its attempts and queues it again; the id stays the same.

        Refuses, changing nothing: an unknown id (RecordNotFoundError), a CACHED asset or one being
        downloaded right now (AssetStateError), a bad URL (InvalidURLError).
        """
        parsed = parse_asset_id(asset_id)
        if parsed is None:
            raise RecordNotFoundError(f"refresh_source: {asset_id!r} is not an asset id (a UUID)")
        checked = str(validate_url(url))
        assets = self._backends.assets
        if not await assets.replace_source(parsed, checked):
            found = await assets.status_of(parsed)
            if found is None:
                raise RecordNotFoundError(f"refresh_source: no asset has the id {parsed}")
            status = found[0]
            if status is CacheStatus.CACHED:
                raise AssetStateError(f"asset {parsed} is already cached; its stored copy stays. Cache the new "
                                      "URL as a new asset (cache_image) if it is different media")
            raise AssetStateError(f"asset {parsed} is being downloaded right now ({status.value}); try again "
                                  "in a few seconds")
        await self._backends.queue.requeue([(parsed, checked)])
        record = await assets.get(parsed)
        assert record is not None
        return record

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
            moved = await assets.upkeep.reset_failed(min(batch_size, limit - retried))
            if not moved:
                break
            try:
                await queue.requeue(moved)
            except QueueUnavailableError:
                # Undo, so the assets stay FAILED (and visible) rather than PENDING without a job.
                with contextlib.suppress(DatabaseError):
                    await assets.upkeep.restore_failed([i for i, _ in moved],
                                                error="retry could not be queued: Redis did not answer")
                raise
            retried += len(moved)
            if on_progress is not None:
                on_progress(len(moved))
        return retried

    async def cleanup(self, days: int = 30, include_referenced: bool = False) -> int:
        """Deletes settled assets not requested for `days` days, with each stored object no other
        asset shares; returns how many assets went.

        The short form of `cleanup_report`, which also says what was kept and why.
        """
        return (await self.cleanup_report(days, include_referenced)).removed

    async def cleanup_report(self, days: int = 30, include_referenced: bool = False, *,
                             on_progress: Callable[[int], None] | None = None,
                             busy_share: float = 1.0) -> CleanupResult:
        """Deletes settled assets not requested for `days` days (age counts from the last request,
        so a URL asked for again is young again): removed, kept because an application row
        references them (unless `include_referenced`), and objects that could not be deleted and
        are left for gc (see `maintenance.cleanup`). `busy_share` below 1 rests between batches
        so that they take that share of the time (see `maintenance.cleanup.remove_settled`)."""
        if isinstance(days, bool) or not isinstance(days, int) or days < 0:
            raise InvalidArgumentError(f"cleanup(days={days!r}): days must be a whole number, 0 or more")
        return await cleanup.remove_settled(
            self._backends.assets, self._backends.store, self._backends.queue, days=days,
            referenced=None if include_referenced else self._apps.referenced, on_progress=on_progress,
            media=self._backends.media, busy_share=busy_share)

    async def derive(self, *, missing: bool = True, since_days: float | None = None, batch_size: int = 500,
                     on_progress: Callable[[int], None] | None = None) -> int:
        """Queues derive jobs for CACHED images, videos and audio; returns how many were queued.

        `missing`: only assets without metadata (cached before derivatives existed, or whose job was
        lost); otherwise every one, to make them again (after changing MEDIACACHE_THUMB_WIDTHS).
        `since_days`: only assets cached in the last that many days. Pages by asset id, one addBulk
        per page; a job id is its asset id, so running it again queues nothing twice.
        """
        if since_days is not None and since_days < 0:
            raise InvalidArgumentError(f"derive(since_days={since_days!r}): give 0 or more days, or None for all")
        since = utcnow() - timedelta(days=since_days) if since_days is not None else None
        media, queue = self._backends.media, self._backends.queue.derive
        queued = 0
        after: uuid.UUID | None = None
        while ids := await media.derive_candidates(after=after, limit=batch_size, missing_only=missing, since=since):
            after = ids[-1]
            if not missing:
                await queue.remove(ids)  # a failed job of the same id would swallow the add
            # Pending before the add: a job that finishes at once then writes its state after ours.
            await media.set_state(ids, MediaState.PENDING)
            await queue.add_bulk(ids)
            queued += len(ids)
            if on_progress is not None:
                on_progress(len(ids))
        return queued

    async def trim(self, max_bytes: int) -> int:
        """Removes the least recently requested assets that no application row references until
        the stored objects (each counted once) take at most `max_bytes`; returns how many went.
        Their ids then resolve to their original URLs, as after cleanup."""
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise InvalidArgumentError(f"trim(max_bytes={max_bytes!r}): max_bytes must be a whole number, 0 or more")
        b = self._backends
        return await trim.trim(b.assets, b.store, b.queue, max_bytes=max_bytes, referenced=self._apps.referenced)

    async def usage(self, *, check_bucket: bool = False) -> UsageReport:
        """Assets and bytes by status, content type, source host and age since the last request, and
        what deduplication saved; with `check_bucket`, the store listed against the database."""
        return await usage.usage(self._backends.assets, self._backends.store, check_bucket=check_bucket)

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
        return await orphans.collect(self._backends.assets, self._backends.store, dry_run=dry_run,
                                     media=self._backends.media)

    # ---- figures for the HTTP service's dashboard and metrics ----------------------------

    async def recent_failures(self, limit: int = 20) -> list[AssetRecord]:
        """FAILED assets, the most recently failed first."""
        return await self._backends.assets.reports.recent_failures(limit)

    async def throughput(self, window_s: int = 600, bucket_s: int = 10) -> list[tuple[int, int]]:
        """(bucket start in unix seconds, assets cached in it) for the last `window_s`, oldest first,
        with empty buckets as zeros."""
        now_s = int(utcnow().timestamp())
        last = now_s - now_s % bucket_s
        first = last - (window_s // bucket_s - 1) * bucket_s
        counts = await self._backends.assets.reports.cached_per_bucket(datetime.fromtimestamp(first, UTC), bucket_s)
        return [(start, counts.get(start, 0)) for start in range(first, last + 1, bucket_s)]

    async def webhook_stats(self) -> WebhookStats:
        """Webhook deliveries still pending and those given up on (dead), in one query."""
        return await self._backends.outbox.counts()

    async def stored_bytes(self) -> int:
        """The total size of the stored objects of CACHED assets, each shared object once."""
        return await self._backends.assets.reports.stored_bytes()

    async def dedup_savings(self) -> tuple[int, int]:
        """(downloads avoided, bytes not stored) by deduplication: the dashboard's cheap headline;
        `usage()` has the full report."""
        avoided, logical = await self._backends.assets.reports.dedup_savings()
        return avoided, max(logical - await self._backends.assets.reports.stored_bytes(), 0)

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
