"""The media-derive queue (producer side): one job per CACHED image, video or audio asset."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from bullmq import Queue
from redis.exceptions import RedisError

from mediacache.errors import QueueUnavailableError
from mediacache.settings import Settings

DERIVE_QUEUE_NAME = "media-derive"
DERIVE_JOB_NAME = "derive-media"
DERIVE_ATTEMPTS = 3
# A finished derive job is removed at once, so that the asset's next CACHED (after a re-download)
# can queue it again under the same job id; while it waits, the id makes a second add a no-op.
_KEEP_FAILED = {"age": 7 * 24 * 3600, "count": 10_000}
_REMOVE_BATCH = 100


def derive_job(asset_id: uuid.UUID) -> dict[str, Any]:
    # The job id is the asset id, as on media-cache: Node BullMQ refuses custom ids containing ':'.
    return {"name": DERIVE_JOB_NAME, "data": {"cacheAssetId": str(asset_id)},
            "opts": {"jobId": str(asset_id), "attempts": DERIVE_ATTEMPTS,
                     "backoff": {"type": "exponential", "delay": 2000},
                     "removeOnComplete": True, "removeOnFail": _KEEP_FAILED}}


class DeriveQueue:
    """Adds derive jobs on a Redis client it is given (the cache queue's, so no new pool)."""

    def __init__(self, settings: Settings, client: aioredis.Redis) -> None:
        self.settings = settings
        self._queue = Queue(DERIVE_QUEUE_NAME, {"connection": client, "prefix": settings.queue_prefix})

    @property
    def bullmq(self) -> Queue:
        return self._queue

    def _unavailable(self, exc: BaseException, what: str) -> QueueUnavailableError:
        return QueueUnavailableError(
            f"Redis at {self.settings.redis_display} did not answer while {what} on {DERIVE_QUEUE_NAME} "
            f"({exc}); check that Redis is running, then run `mediacache derive --missing`")

    async def add(self, asset_id: uuid.UUID) -> None:
        job = derive_job(asset_id)
        try:
            await self._queue.add(job["name"], job["data"], job["opts"])
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc, "adding a derive job") from exc

    async def add_bulk(self, ids: Sequence[uuid.UUID]) -> None:
        if not ids:
            return
        try:
            await self._queue.addBulk([derive_job(i) for i in ids])
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc, f"adding {len(ids)} derive jobs") from exc

    async def remove(self, ids: Sequence[uuid.UUID]) -> None:
        """Removes the derive jobs of `ids` that are not running (a failed one blocks a new add)."""
        try:
            for start in range(0, len(ids), _REMOVE_BATCH):
                await asyncio.gather(*(self._queue.remove(str(i)) for i in ids[start:start + _REMOVE_BATCH]))
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc, "removing derive jobs") from exc

    async def counts(self) -> dict[str, int]:
        try:
            return dict(await self._queue.getJobCounts("waiting", "active", "completed", "failed", "delayed"))
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc, "reading derive queue counts") from exc

    async def close(self) -> None:
        await self._queue.close()
