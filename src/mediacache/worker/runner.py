"""The BullMQ runner: start-up checks, the BullMQ Worker around the job handler, graceful shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import time
import uuid
from typing import Any

from bullmq.custom_errors import DelayedError, UnrecoverableError

from mediacache.broker.connection import worker_commands_client, worker_connection
from mediacache.broker.jobs import QUEUE_NAME
from mediacache.db.media_repository import derivable
from mediacache.domain import CacheStatus
from mediacache.errors import FetchError, FinalFailureError, LeaseHeldError, MediaCacheError
from mediacache.fetching.fetch import Fetcher
from mediacache.service import MediaCache
from mediacache.settings import Settings
from mediacache.worker.chaining import ChainingWorker
from mediacache.worker.delivery import delivery_of
from mediacache.worker.handler import CacheJobHandler
from mediacache.worker.node_names import make_worker_visible_to_node
from mediacache.worker.politeness import Politeness
from mediacache.worker.pooled_commands import pool_worker_commands
from mediacache.worker.traces import use_short_stacktraces

log = logging.getLogger("mediacache.worker")
# Connections for the worker's commands beyond one per job in flight: lock renewals, the stalled
# check and the announcements' neighbours never wait behind the jobs.
COMMAND_CONNECTIONS_SPARE = 4


class CacheWorker:
    """A BullMQ worker on the `media-cache` queue, running CacheJobHandler `concurrency` at a time."""

    def __init__(self, cache: MediaCache, *, concurrency: int | None = None, fetcher: Fetcher | None = None,
                 politeness: Politeness | None = None) -> None:
        self.cache = cache
        self.settings: Settings = cache.settings
        self.concurrency = concurrency or self.settings.concurrency
        self.fetcher = fetcher or Fetcher(self.settings, max_connections=max(10, self.concurrency * 2))
        backends = cache.backends
        self.handler = CacheJobHandler(self.settings, backends.assets, backends.store, self.fetcher,
                                       after_cached=self._queue_derive if self.settings.derive_enabled else None)
        self.politeness = politeness or Politeness(self.settings)
        self._worker: ChainingWorker | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[Any]] = set()
        self._handing_back = False
        self._reconciler: asyncio.Task[None] | None = None
        # Off unless a webhook URL is set: then the outbox has no rows to deliver.
        self.webhooks = backends.webhooks

    async def _queue_derive(self, asset_id: uuid.UUID, content_type: str | None) -> None:
        if derivable(content_type):
            await self.cache.backends.queue.derive.add(asset_id)

    async def check(self) -> None:
        """Fails fast, with what to do, when the database, the store or Redis is not usable."""
        await self.cache.check_migrated()
        await self.cache.backends.store.check_writable()
        await self.cache.check_storage_placement()
        await self.cache.ping_queue()
        await self.cache.bind_queue("worker")

    async def start(self) -> None:
        await self.check()
        lock_ms = self.settings.lock_duration_ms
        self._worker = ChainingWorker(QUEUE_NAME, self._process, {
            "connection": worker_connection(self.settings),
            "prefix": self.settings.queue_prefix,
            "concurrency": self.concurrency,
            "lockDuration": lock_ms,
            "stalledInterval": max(1000, lock_ms // 2),
            "maxStalledCount": 3,
            # After a Redis outage, poll again within 2 s rather than bullmq's 15 s.
            "runRetryDelay": 2000,
            "autorun": False,
            "name": f"mediacache@{socket.gethostname()}:{os.getpid()}",
        })
        commands = worker_commands_client(self.settings, max_connections=self.concurrency + COMMAND_CONNECTIONS_SPARE)
        if commands is not None:
            await pool_worker_commands(self._worker, commands)
        self._worker.on("failed", _on_failed)
        self._worker.on("error", _on_error)
        # Python bullmq names connections in a way Node's getWorkers() (bull-board) never matches.
        await make_worker_visible_to_node(self._worker)
        # Without the server's version bullmq rounds every delay up to whole seconds; host waits are shorter.
        await self._worker.blockingRedisConnection.getRedisVersion()
        self._task = asyncio.create_task(self._worker.run(), name="bullmq-worker")
        if self.webhooks is not None:
            await self.webhooks.start()
        if self.settings.reconcile_interval_s > 0:
            self._reconciler = asyncio.create_task(self._reconcile_periodically(), name="reconcile")
        # Everything imported and connected so far lives as long as the process: frozen, it is
        # left out of the collector's full passes, which otherwise walk it every few seconds
        # (about 35 ms each here) and stall every download in flight.
        gc.freeze()
        log.info("worker ready pid=%d queue=%s concurrency=%d redis=%s database=%s storage=%s loop=%s",
                 os.getpid(), QUEUE_NAME, self.concurrency, self.settings.redis_display,
                 self.settings.database_display, self.cache.backends.store.name,
                 type(asyncio.get_running_loop()).__module__.split(".")[0])

    async def _process(self, job: Any, token: str) -> dict[str, Any]:
        use_short_stacktraces(job)
        try:
            asset_id = uuid.UUID(str(job.data["cacheAssetId"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise UnrecoverableError(f"job {job.id} has no valid cacheAssetId in its data") from exc
        final_attempt = job.attemptsMade + 1 >= int(job.opts.get("attempts") or 1)
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            outcome = await self.politeness.run(
                job, token, lambda: self.handler.process(asset_id, final_attempt=final_attempt,
                                                         delivery=delivery_of(job)))
        except FinalFailureError as exc:
            self._announce(asset_id, CacheStatus.FAILED)
            raise UnrecoverableError(str(exc)) from exc
        except FetchError as exc:
            if exc.retry_after_s:
                _wait_at_least(job, exc.retry_after_s)
            raise
        except LeaseHeldError as exc:
            # Not a failed attempt: wait for the holder's lease instead of spending a retry.
            await job.moveToDelayed(int(exc.retry_at.timestamp() * 1000) + 100, token)
            raise DelayedError(str(exc)) from exc
        except asyncio.CancelledError:
            if not self._handing_back:
                raise
            # Back to the queue at once, without spending one of the job's attempts.
            await job.moveToDelayed(int(time.time() * 1000) + 500, token)
            raise DelayedError("handed back: the worker is shutting down") from None
        finally:
            if task is not None:
                self._running.discard(task)
        if outcome.status == "cached":
            self._announce(asset_id, CacheStatus.CACHED)
        return outcome.as_job_result()

    def _announce(self, asset_id: uuid.UUID, status: CacheStatus) -> None:
        """After a final outcome: wake this process's webhook delivery (its outbox row is written)
        and tell waiters everywhere, best effort, over Redis."""
        if self.webhooks is not None:
            self.webhooks.wake()
        self.cache.backends.bus.announce(asset_id, status)

    async def stop(self, grace_s: float | None = None) -> None:
        """Stops taking jobs and waits up to `grace_s` for the ones held; then hands those back.

        A handed-back job returns to the queue at once without using up an attempt, and its
        asset's lease is released, so another worker can take it without waiting.
        """
        if self._worker is None:
            return
        if self._reconciler is not None:
            self._reconciler.cancel()
            await asyncio.wait({self._reconciler})
        grace_s = self.settings.shutdown_grace_s if grace_s is None else grace_s
        worker, self._worker = self._worker, None
        closing = asyncio.create_task(worker.close(), name="bullmq-worker-close")
        done, _ = await asyncio.wait({closing}, timeout=grace_s)
        if not done:
            log.warning("%d jobs still running after %.0f s; handing them back to the queue",
                        len(self._running), grace_s)
            self._handing_back = True
            for task in list(self._running):
                task.cancel()
            done, _ = await asyncio.wait({closing}, timeout=10)
            if not done:
                worker.cancelProcessing()
        await closing
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=5)
        if self.webhooks is not None:
            # Undelivered rows stay in the outbox for the next worker; nothing is lost by stopping.
            await self.webhooks.stop()
        await self.politeness.close()
        await self.fetcher.close()

    async def _reconcile_periodically(self) -> None:
        """Every interval, one worker of the queue (whoever takes the lock) requeues lost work."""
        interval_s = self.settings.reconcile_interval_s
        while True:
            await asyncio.sleep(interval_s)
            try:
                if await self.cache.backends.queue.try_lock("reconcile", int(interval_s * 900)):
                    await self.cache.reconcile(min_age_s=max(interval_s, 2 * self.settings.lease_s))
            except MediaCacheError as exc:
                # An outage of Redis or the database: report it and try again next time.
                log.warning("reconciliation skipped: %s", exc)

    async def __aenter__(self) -> CacheWorker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


MAX_RETRY_AFTER_S = 3600.0


def _wait_at_least(job: Any, retry_after_s: float) -> None:
    """Makes BullMQ's next retry of `job` wait at least what the origin's Retry-After asked.

    BullMQ computes the delay from `job.opts["backoff"]` when the attempt fails; changing it on
    this in-memory job affects this one retry only (the stored options stay exponential).
    """
    backoff = job.opts.get("backoff") or {}
    planned_ms = int(backoff.get("delay") or 0) * 2 ** max(0, int(job.attemptsMade))
    wanted_ms = int(min(retry_after_s, MAX_RETRY_AFTER_S) * 1000)
    if wanted_ms > planned_ms:
        job.opts = {**job.opts, "backoff": {"type": "fixed", "delay": wanted_ms}}


def _on_failed(job: Any, err: BaseException, *_: Any) -> None:
    # BullMQ event handlers must be plain functions that never raise.
    try:
        asset_id = (getattr(job, "data", None) or {}).get("cacheAssetId")
        log.warning("job %s attempt %s failed: %s", getattr(job, "id", "?"), getattr(job, "attemptsMade", "?"), err,
                    extra={"asset_id": asset_id})
    except Exception:
        pass


def _on_error(err: BaseException, *_: Any) -> None:
    try:
        if isinstance(err, MediaCacheError):
            log.error("worker: %s", err)
        else:
            log.error("worker error: %r", err)
    except Exception:
        pass
