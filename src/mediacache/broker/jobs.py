"""The BullMQ queue: names, job options, enqueue and counts (the producer side)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

from bullmq import Queue
from redis.exceptions import RedisError

from mediacache.broker.connection import explain_redis_failure, producer_client
from mediacache.errors import QueueUnavailableError
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


def job_options(asset_id: uuid.UUID, settings: Settings) -> dict[str, Any]:
    return {
        "jobId": str(asset_id),
        "attempts": settings.job_attempts,
        "backoff": {"type": "exponential", "delay": settings.backoff_ms},
        "removeOnComplete": KEEP_COMPLETED,
        "removeOnFail": KEEP_FAILED,
    }


def job_data(asset_id: uuid.UUID, url: str) -> dict[str, str]:
    return {"cacheAssetId": str(asset_id), "url": url}


class JobQueue:
    """Adds and inspects cache-media jobs. Fails fast (QueueUnavailableError) when Redis is down,
    so an enqueue never hangs in the caller's request."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client = producer_client(settings)
        self._queue = Queue(QUEUE_NAME, {"connection": self._client, "prefix": settings.queue_prefix})

    @property
    def bullmq(self) -> Queue:
        return self._queue

    def _unavailable(self, exc: BaseException, what: str) -> QueueUnavailableError:
        return QueueUnavailableError(explain_redis_failure(self.settings, exc, what))

    async def add(self, asset_id: uuid.UUID, url: str) -> None:
        try:
            await self._queue.add(JOB_NAME, job_data(asset_id, url), job_options(asset_id, self.settings))
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc, "adding a job") from exc

    async def add_bulk(self, items: Sequence[tuple[uuid.UUID, str]]) -> None:
        if not items:
            return
        jobs = [{"name": JOB_NAME, "data": job_data(i, u), "opts": job_options(i, self.settings)}
                for i, u in items]
        try:
            await self._queue.addBulk(jobs)
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc, f"adding {len(items)} jobs") from exc

    async def requeue(self, items: Sequence[tuple[uuid.UUID, str]]) -> None:
        """Adds fresh jobs for assets whose old job may still sit in Redis (failed or completed):
        BullMQ ignores an add whose job id exists, so the old job is removed first."""
        await self.remove([asset_id for asset_id, _ in items])
        await self.add_bulk(items)

    async def remove(self, ids: Sequence[uuid.UUID]) -> None:
        """Removes the jobs of `ids` (missing ones are fine), a batch of removals at a time."""
        try:
            for start in range(0, len(ids), _REMOVE_BATCH):
                await asyncio.gather(*(self._queue.remove(str(i)) for i in ids[start:start + _REMOVE_BATCH]))
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc, "removing jobs") from exc

    async def stats(self) -> QueueStats:
        try:
            c = await self._queue.getJobCounts("waiting", "active", "completed", "failed", "delayed")
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc, "reading queue counts") from exc
        return QueueStats(waiting=c["waiting"], active=c["active"], completed=c["completed"],
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
        await self._queue.close()
        await self._client.aclose()
