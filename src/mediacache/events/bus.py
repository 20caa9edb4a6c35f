"""Announcing final outcomes on Redis pub/sub, and one shared subscriber per process that fans them out.

Best effort only: the database is the truth. A message lost during a Redis outage costs a waiter
at most its fallback re-read (see `waiting`), and the webhook outbox never depends on Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from mediacache.broker.connection import events_client
from mediacache.broker.jobs import QUEUE_NAME
from mediacache.domain import CacheStatus
from mediacache.events.payload import event_type_for
from mediacache.settings import Settings

log = logging.getLogger("mediacache.events")

RECONNECT_S = 2.0
# Announcements made within this window go to Redis together, in one pipelined write: a worker
# finishing hundreds of assets a second would otherwise spend a socket round trip on each.
PUBLISH_WINDOW_S = 0.01
# While Redis does not answer, announcements beyond this many are dropped (best effort, see above).
MAX_QUEUED = 10_000


@dataclass(frozen=True, slots=True)
class Announcement:
    """What the pub/sub message says: an asset reached a final status, or (asset.derived, with its
    media_state) its derive step is over."""

    type: str
    asset_id: uuid.UUID
    status: CacheStatus
    media_state: str | None = None

    def as_json(self) -> str:
        data = {"type": self.type, "asset_id": str(self.asset_id), "status": self.status.value}
        if self.media_state is not None:
            data["media_state"] = self.media_state
        return json.dumps(data)


Listener = Callable[[Announcement], None]


def channel_name(settings: Settings) -> str:
    """Under the queue prefix, so tests (and deployments) that share a Redis do not hear each other."""
    return f"{settings.queue_prefix}:{QUEUE_NAME}:mediacache:events"


class EventBus:
    """Publishes announcements and runs the process's one subscriber, started by the first listener."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.channel = channel_name(settings)
        self._publisher: aioredis.Redis | None = None
        self._listeners: set[Listener] = set()
        self._subscriber: asyncio.Task[None] | None = None
        self._queued: list[str] = []
        self._flusher: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    # ---- publishing ----------------------------------------------------------------------

    def announce(self, asset_id: uuid.UUID, status: CacheStatus, *, event_type: str | None = None,
                 media_state: str | None = None) -> None:
        """Publishes in the background: a job's outcome must not wait on (or fail with) pub/sub."""
        if len(self._queued) >= MAX_QUEUED:
            log.debug("announcement of asset %s dropped: %d are waiting for Redis", asset_id, len(self._queued))
            return
        self._queued.append(Announcement(event_type or event_type_for(status), asset_id, status,
                                         media_state).as_json())
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_after(PUBLISH_WINDOW_S), name="announce")

    async def _flush_after(self, window_s: float) -> None:
        await asyncio.sleep(window_s)
        # Those announced while a batch is on its way go in the next one; the task ends with none
        # left, so the next announcement starts another.
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                if self._publisher is None:
                    self._publisher = events_client(self.settings, socket_timeout_s=30.0)
                async with self._publisher.pipeline(transaction=False) as pipe:
                    for message in batch:
                        pipe.publish(self.channel, message)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                log.debug("could not announce %d outcomes: %s", len(batch), exc)

    # ---- listening -----------------------------------------------------------------------

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Calls `listener` (a plain function that must not block) for every announcement; returns
        the function that stops it."""
        self._listeners.add(listener)
        if self._subscriber is None or self._subscriber.done():
            self._subscriber = asyncio.create_task(self._subscribe(), name="events-subscriber")
        return lambda: self._listeners.discard(listener)

    async def _subscribe(self) -> None:
        while True:
            # No socket time-out: the connection sits idle between announcements.
            client = events_client(self.settings, socket_timeout_s=None)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.subscribed.set()
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None and message.get("type") == "message":
                        self._dispatch(message.get("data"))
            except (RedisError, OSError) as exc:
                self.subscribed.clear()
                log.warning("event subscriber lost Redis (%s); waiters fall back to reading the database", exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(RECONNECT_S)

    def _dispatch(self, raw: Any) -> None:
        try:
            data = json.loads(raw)
            media_state = data.get("media_state")
            message = Announcement(str(data["type"]), uuid.UUID(str(data["asset_id"])), CacheStatus(data["status"]),
                                   None if media_state is None else str(media_state))
        except (ValueError, KeyError, TypeError):
            log.debug("ignored a malformed announcement: %r", raw)
            return
        for listener in list(self._listeners):
            try:
                listener(message)
            except Exception:
                log.exception("event listener failed")

    async def close(self) -> None:
        if self._flusher is not None:
            # What was announced before closing still goes out, within the window.
            await asyncio.wait({self._flusher}, timeout=2)
        if self._subscriber is not None:
            self._subscriber.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._subscriber
            self._subscriber = None
        if self._publisher is not None:
            with contextlib.suppress(Exception):
                await self._publisher.aclose()
            self._publisher = None
