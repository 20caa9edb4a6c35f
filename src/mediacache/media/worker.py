"""The derive worker: a BullMQ Worker on `media-derive`, each job decoded in the media sandbox."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from typing import Any

from bullmq import Worker
from bullmq.custom_errors import UnrecoverableError

from mediacache.broker.connection import worker_connection
from mediacache.broker.derive_jobs import DERIVE_QUEUE_NAME
from mediacache.domain import CacheStatus, MediaState
from mediacache.errors import FinalFailureError, MediaCacheError
from mediacache.events.payload import ASSET_DERIVED
from mediacache.media.job import DeriveJobHandler
from mediacache.media.sandbox import MediaSandbox
from mediacache.service import MediaCache

log = logging.getLogger("mediacache.media")


class DeriveWorker:
    """Runs derive jobs `concurrency` at a time, each in one of as many sandbox processes.

    Its concurrency is small on purpose (MEDIACACHE_DERIVE_CONCURRENCY, default 1): decoding is CPU
    work, and the cache worker beside it must keep its share of the cores for the originals.
    """

    def __init__(self, cache: MediaCache, *, concurrency: int | None = None) -> None:
        self.cache = cache
        self.settings = cache.settings
        self.concurrency = concurrency or self.settings.derive_concurrency
        self.sandbox = MediaSandbox(workers=self.concurrency)
        b = cache.backends
        # The process's one webhook delivery, shared with a cache worker beside this one (if any).
        self.webhooks = b.webhooks
        self.handler = DeriveJobHandler(self.settings, b.assets, b.media, b.store, self.sandbox,
                                        on_recorded=self._announce)
        self._worker: Worker | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.cache.check_migrated()
        await self.cache.ping_queue()
        await self.sandbox.start()
        if self.webhooks is not None:
            await self.webhooks.start()
        lock_ms = max(self.settings.lock_duration_ms, 60_000)  # a decode may take the sandbox's 30 s
        self._worker = Worker(DERIVE_QUEUE_NAME, self._process, {
            "connection": worker_connection(self.settings),
            "prefix": self.settings.queue_prefix,
            "concurrency": self.concurrency,
            "lockDuration": lock_ms,
            "stalledInterval": lock_ms // 2,
            "maxStalledCount": 2,
            "runRetryDelay": 2000,
            "autorun": False,
            "name": f"mediacache-derive@{socket.gethostname()}:{os.getpid()}",
        })
        self._worker.on("error", _on_error)
        # Connected before run(): a stop that comes while run() is still opening its blocking
        # connection otherwise leaks it, and the interpreter prints the leak over the log at exit.
        await self._worker.blockingRedisConnection.getRedisVersion()
        self._task = asyncio.create_task(self._worker.run(), name="bullmq-derive-worker")
        log.info("derive worker ready pid=%d queue=%s concurrency=%d widths=%s", os.getpid(), DERIVE_QUEUE_NAME,
                 self.concurrency, ",".join(map(str, self.settings.thumb_width_list)))

    def _announce(self, asset_id: uuid.UUID, state: MediaState) -> None:
        """After a recorded outcome: deliver its asset.derived webhook now, and tell event-stream
        listeners everywhere, best effort, over Redis."""
        if self.webhooks is not None:
            self.webhooks.wake()
        self.cache.backends.bus.announce(asset_id, CacheStatus.CACHED, event_type=ASSET_DERIVED,
                                         media_state=state.value)

    async def _process(self, job: Any, token: str) -> dict[str, Any]:
        try:
            asset_id = uuid.UUID(str(job.data["cacheAssetId"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise UnrecoverableError(f"derive job {job.id} has no valid cacheAssetId in its data") from exc
        final_attempt = job.attemptsMade + 1 >= int(job.opts.get("attempts") or 1)
        try:
            outcome = await self.handler.process(asset_id, final_attempt=final_attempt)
        except FinalFailureError as exc:
            raise UnrecoverableError(str(exc)) from exc
        return outcome.as_job_result()

    async def stop(self, grace_s: float | None = None) -> None:
        if self._worker is None:
            return
        worker, self._worker = self._worker, None
        grace_s = self.settings.shutdown_grace_s if grace_s is None else grace_s
        closing = asyncio.create_task(worker.close())
        done, _ = await asyncio.wait({closing}, timeout=grace_s)
        if not done:
            # A decode still running: its job is taken over after the lock runs out (it is idempotent).
            worker.cancelProcessing()
            await asyncio.wait({closing}, timeout=10)
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=5)
        if self.webhooks is not None:
            await self.webhooks.stop()
        await self.sandbox.close()

    async def __aenter__(self) -> DeriveWorker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _on_error(err: BaseException, *_: Any) -> None:
    # BullMQ event handlers must be plain functions that never raise.
    try:
        if isinstance(err, MediaCacheError):
            log.error("derive worker: %s", err)
        else:
            log.error("derive worker error: %r", err)
    except Exception:
        pass
