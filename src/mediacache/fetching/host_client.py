"""The host limiter built from Settings, on its own Redis client (for the worker and for stats)."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from mediacache.broker.connection import sentinel_client
from mediacache.fetching.host_limiter import HostLimiter, key_prefix_for
from mediacache.settings import Settings


def limiter_client(settings: Settings) -> aioredis.Redis:
    """A Redis client for the limiter, built like the queue's (broker/jobs.py): a short time-out and
    one quick retry, so an outage turns into a Wait within seconds rather than a hang."""
    if settings.redis_sentinels:
        # Through the Sentinels like the queue, or the limiter would wait on a Redis that is not the primary.
        return sentinel_client(settings, role="producer", socket_timeout_s=5.0)
    conn = settings.redis_connection()
    conn["socket_timeout"] = 5.0
    client = aioredis.Redis(**conn)
    client.set_retry(Retry(NoBackoff(), 1))
    return client


def build_limiter(settings: Settings, client: aioredis.Redis | None = None) -> HostLimiter:
    """The host limiter of `settings` on `client` (default: `limiter_client(settings)`)."""
    return HostLimiter(client or limiter_client(settings), key_prefix_for(settings.queue_prefix),
                       permit_ttl_s=settings.host_permit_ttl_s, breaker=settings.breaker_policy)
