"""Backends: the connections one MediaCache owns (database, repositories, store, queue, bus, limiter)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from mediacache.broker.jobs import JobQueue
from mediacache.broker.owner import DatabaseIdentity, database_display_url
from mediacache.db.engine import create_engine
from mediacache.db.instance import instance_id
from mediacache.db.media_repository import MediaRepository
from mediacache.db.repository import AssetRepository
from mediacache.events.bus import EventBus
from mediacache.events.outbox import OutboxRepository
from mediacache.events.waiting import AssetWatcher
from mediacache.events.webhooks import WebhookDeliverer
from mediacache.fetching.host_client import build_limiter
from mediacache.fetching.host_limiter import HostLimiter
from mediacache.settings import Settings
from mediacache.storage import ObjectStore, open_store


class Backends:
    """The connections one MediaCache owns: database engine, asset repository, store and queue.

    The worker and the HTTP service of this package run on the same ones as the cache they are
    given (`cache.backends`), so a process holds one pool of each. Applications use the methods
    of MediaCache, never these.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: AsyncEngine = create_engine(settings.sqlalchemy_url, pool_size=settings.db_pool_size,
                                                   pgbouncer=settings.db_pgbouncer)
        self.assets = AssetRepository(self.engine, settings.database_display, settings.webhook_url_list,
                                      content_dedup=settings.dedup)
        self.outbox = OutboxRepository(self.engine, settings.database_display)
        self.media = MediaRepository(self.engine, settings.database_display, settings.webhook_url_list)
        self.store: ObjectStore = open_store(settings)
        self._queue: JobQueue | None = None
        self._bus: EventBus | None = None
        self._webhooks: WebhookDeliverer | None = None
        self._watcher: AssetWatcher | None = None
        self._identity: DatabaseIdentity | None = None
        self._host_limiter: HostLimiter | None = None

    @property
    def host_limiter(self) -> HostLimiter:
        """The per-host limiter (to read its state); created on first use like the queue."""
        if self._host_limiter is None:
            self._host_limiter = build_limiter(self.settings)
        return self._host_limiter

    @property
    def bus(self) -> EventBus:
        """Announcements of final outcomes on Redis pub/sub; created on first use like the queue."""
        if self._bus is None:
            self._bus = EventBus(self.settings)
        return self._bus

    @property
    def webhooks(self) -> WebhookDeliverer | None:
        """This process's webhook delivery, shared by the workers in it; None without
        MEDIACACHE_WEBHOOK_URL (then no outbox row is ever written)."""
        if self._webhooks is None and self.settings.webhook_url_list:
            self._webhooks = WebhookDeliverer(self.settings, self.outbox)
        return self._webhooks

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
            self._queue = JobQueue(self.settings, identity=self.database_identity)
        return self._queue

    async def database_identity(self) -> DatabaseIdentity:
        """This database's instance id and its URL without password (read once, then remembered)."""
        if self._identity is None:
            self._identity = DatabaseIdentity(
                await instance_id(self.engine, self.settings.database_display),
                database_display_url(self.settings.sqlalchemy_url))
        return self._identity

    async def close(self) -> None:
        if self._host_limiter is not None:
            await self._host_limiter.aclose()
            self._host_limiter = None
        if self._webhooks is not None:
            await self._webhooks.close()
            self._webhooks = None
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
