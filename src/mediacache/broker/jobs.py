"""The BullMQ queue: names, job options, enqueue and counts (the producer side)."""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from bullmq import Queue
from redis.exceptions import RedisError

from mediacache.broker.connection import explain_redis_failure, producer_client
from mediacache.broker.derive_jobs import DeriveQueue
from mediacache.broker.owner import Binding, DatabaseIdentity, Role, claim_queue_owner
from mediacache.errors import QueueUnavailableError
from mediacache.fetching.expiry import link_expiry
from mediacache.records import QueueStats
from mediacache.settings import Settings

QUEUE_NAME = "media-cache"
JOB_NAME = "cache-media"
# Completed jobs are only bookkeeping (the database holds the truth), so Redis keeps few of them.
KEEP_COMPLETED = {"age": 3600, "count": 1000}
KEEP_FAILED = {"age": 7 * 24 * 3600}
# Removals in flight at once: retry-failed and reconcile remove thousands of old jobs, and one
# round trip after another would take seconds.
_REMOVE_BATCH = 100
# A job whose asset was just recorded FAILED may still be active (locked) for the moment its worker
# takes to move it to failed, and BullMQ will not remove a locked job: requeue waits this long.
_REQUEUE_SETTLE_S = 5.0
_REQUEUE_POLL_S = 0.05

log = logging.getLogger("mediacache.queue")


# BullMQ takes the lowest priority number first and caps it at 2^21. Every job gets one: jobs without
# a priority would be taken before all prioritised ones.
PRIORITY_MAX = 2 ** 21
_HOUR_S = 3600


def expiry_priority(url: str, *, now: datetime | None = None) -> int:
    """The BullMQ priority of a job for `url`: the soonest-expiring link first.

    Seconds until expiry within the hour map one to one (an expired link is 1: it fails at once
    without a request); later expiries in minutes after those; a link without an expiry last
    (PRIORITY_MAX). The order is exact among jobs queued at about the same time; between jobs
    queued far apart it is off by the time between their enqueues, as each counts from its own.
    """
    expires = link_expiry(url)
    if expires is None:
        return PRIORITY_MAX
    left_s = (expires - (now or datetime.now(UTC))).total_seconds()
    if left_s <= _HOUR_S:
        return 1 + max(0, math.ceil(left_s))
    return min(PRIORITY_MAX - 1, 1 + _HOUR_S + math.ceil((left_s - _HOUR_S) / 60))


def job_options(asset_id: uuid.UUID, settings: Settings, url: str | None = None) -> dict[str, Any]:
    return {
        "jobId": str(asset_id),
        "priority": PRIORITY_MAX if url is None else expiry_priority(url),
        "attempts": settings.job_attempts,
        "backoff": {"type": "exponential", "delay": settings.backoff_ms},
        "removeOnComplete": KEEP_COMPLETED,
        "removeOnFail": KEEP_FAILED,
    }


def job_data(asset_id: uuid.UUID, url: str) -> dict[str, str]:
    return {"cacheAssetId": str(asset_id), "url": url}


class JobQueue:
    """Adds and inspects cache-media jobs. Fails fast (QueueUnavailableError) when Redis is down,
    so an enqueue never hangs in the caller's request.

    With `identity` (this process's database), the first call that adds jobs binds the queue to
    that database, or refuses with QueueOwnerMismatchError when it belongs to another one.
    """

    def __init__(self, settings: Settings,
                 identity: Callable[[], Awaitable[DatabaseIdentity]] | None = None) -> None:
        self.settings = settings
        self._identity = identity
        self._bound = False
        self._client = producer_client(settings)
        self._queue = Queue(QUEUE_NAME, {"connection": self._client, "prefix": settings.queue_prefix})
        self._derive: DeriveQueue | None = None

    @property
    def derive(self) -> DeriveQueue:
        """The media-derive queue, on this queue's Redis client (created on first use)."""
        if self._derive is None:
            self._derive = DeriveQueue(self.settings, self._client)
        return self._derive

    @property
    def bullmq(self) -> Queue:
        return self._queue

    def _unavailable(self, exc: BaseException, what: str) -> QueueUnavailableError:
        return QueueUnavailableError(explain_redis_failure(self.settings, exc, what))

    async def bind(self, role: Role) -> Binding | None:
        """Checks (and at first use records) that this queue belongs to this process's database.

        Cached once it succeeded, so an enqueue pays for it once per process; None without identity.
        """
        if self._identity is None:
            return None
        identity = await self._identity()
        try:
            binding = await claim_queue_owner(
                self._client, prefix=self.settings.queue_prefix, queue_name=QUEUE_NAME, identity=identity,
                redis_display=self.settings.redis_display, redis_db=int(self.settings.redis_connection()["db"]),
                role=role)
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc, "reading which database the queue belongs to") from exc
        if binding == "moved":
            log.info("the queue %r now serves its database under the URL %s", QUEUE_NAME, identity.display)
        self._bound = True
        return binding

    async def ensure_bound(self) -> None:
        """`bind("producer")` unless this queue is bound already."""
        if not self._bound and self._identity is not None:
            await self.bind("producer")

    async def add(self, asset_id: uuid.UUID, url: str) -> None:
        await self.ensure_bound()
        try:
            await self._queue.add(JOB_NAME, job_data(asset_id, url), job_options(asset_id, self.settings, url))
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc, "adding a job") from exc

    async def add_bulk(self, items: Sequence[tuple[uuid.UUID, str]]) -> None:
        if not items:
            return
        await self.ensure_bound()
        jobs = [{"name": JOB_NAME, "data": job_data(i, u), "opts": job_options(i, self.settings, u)}
                for i, u in items]
        try:
            await self._queue.addBulk(jobs)
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc, f"adding {len(items)} jobs") from exc

    async def requeue(self, items: Sequence[tuple[uuid.UUID, str]]) -> None:
        """Adds fresh jobs for assets whose old job may still sit in Redis (failed or completed):
        BullMQ ignores an add whose job id exists, so the old job is removed first."""
        await self.ensure_bound()
        held = await self._present([asset_id for asset_id, _ in items])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _REQUEUE_SETTLE_S
        # The add of a job whose old one is still there would be ignored, and the asset left PENDING
        # without a job until reconciliation: remove again once its worker has let go of it.
        while held:
            await self._remove_jobs(held)
            held = await self._present(held)
            if not held:
                break
            if loop.time() > deadline:
                log.warning("%d jobs were still held by a worker after %.0f s; reconciliation will requeue "
                            "their assets", len(held), _REQUEUE_SETTLE_S)
                break
            await asyncio.sleep(_REQUEUE_POLL_S)
        await self.add_bulk(items)

    async def remove(self, ids: Sequence[uuid.UUID]) -> None:
        """Removes the jobs of `ids` (missing ones are fine), a batch of removals at a time.

        Only the jobs Redis still holds are removed: one pipelined look-up first, since Redis keeps
        finished jobs briefly (KEEP_COMPLETED) and most ids a cleanup names have none. BullMQ's
        removal script, run anyway, cost cleanup about 200 µs of CPU per asset, two thirds of it.
        """
        await self._remove_jobs(await self._present(ids))

    async def _present(self, ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
        """Those of `ids` whose job Redis still holds, in one pipelined look-up."""
        return [i for i, state in (await self.job_states(ids)).items() if state != "missing"]

    async def _remove_jobs(self, present: Sequence[uuid.UUID]) -> None:
        try:
            for start in range(0, len(present), _REMOVE_BATCH):
                await asyncio.gather(*(self._queue.remove(str(i)) for i in present[start:start + _REMOVE_BATCH]))
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc, "removing jobs") from exc

    async def stats(self) -> QueueStats:
        try:
            c = await self._queue.getJobCounts("waiting", "prioritized", "active", "completed", "failed", "delayed")
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc, "reading queue counts") from exc
        # Every job carries an expiry priority, so waiting jobs sit in BullMQ's prioritized set.
        return QueueStats(waiting=c["waiting"] + c["prioritized"], active=c["active"], completed=c["completed"],
                          failed=c["failed"], delayed=c["delayed"])

    async def job_states(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        """Per asset id: "missing" (no job in Redis), "finished" (completed or failed) or "live"."""
        if not ids:
            return {}
        prefix = f"{self.settings.queue_prefix}:{QUEUE_NAME}:"
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for asset_id in ids:
                    pipe.hmget(prefix + str(asset_id), "timestamp", "finishedOn")
                rows = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc, "reading job states") from exc
        return {asset_id: "missing" if created is None else "finished" if finished else "live"
                for asset_id, (created, finished) in zip(ids, rows, strict=True)}

    async def try_lock(self, name: str, ttl_ms: int) -> bool:
        """A best-effort lock shared by all workers on this queue (SET NX PX)."""
        key = f"{self.settings.queue_prefix}:{QUEUE_NAME}:mediacache:{name}"
        try:
            return bool(await self._client.set(key, str(uuid.uuid4()), nx=True, px=ttl_ms))
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc, f"taking the {name} lock") from exc

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc, "checking the connection") from exc

    async def close(self) -> None:
        if self._derive is not None:
            await self._derive.close()
        await self._queue.close()
        await self._client.aclose()
