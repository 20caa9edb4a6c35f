"""Redis clients for the producer, the BullMQ worker and the event bus: plain, TLS or through Sentinel.

A plain or TLS Redis keeps the connections that the suite's guards were measured with (a dict for
the bullmq Worker, which builds its own two single-connection clients from it; a blocking pool for
the producer). Sentinel cannot be said in a dict: bullmq then gets a `redis.asyncio.Redis` instance
on a Sentinel pool, which it keeps as it is for its Queue and for both connections of its Worker.
"""

from __future__ import annotations

from typing import Any, Literal

import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelManagedConnection
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mediacache.settings import Settings

Role = Literal["producer", "worker", "events"]
# Calls in flight at once on the producer's pool: retry-failed and reconcile remove thousands of
# jobs while requests queue new ones; redis-py's default pool would raise "Too many connections".
MAX_PRODUCER_CONNECTIONS = 64
PRODUCER_SOCKET_TIMEOUT_S = 5.0
# Longer than bullmq's longest blocking BZPOPMIN (10 s), so a quiet queue is not a time-out.
WORKER_SOCKET_TIMEOUT_S = 30.0


class FailoverAwareConnection(SentinelManagedConnection):
    """Works around redis-py issue #3874 (open in redis-py 8.1): a pooled connection that dropped
    and is retried in place reconnects through `connect_check_health()` straight to the host and
    port it had, never asking Sentinel again. After a failover a command in flight at the kill (a
    worker's BZPOPMIN or moveToFinished) then retries the dead primary until its retries run out and
    the job's attempt fails. Reconnecting through `connect()` resolves the current primary first."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not self.is_connected:
            await self.connect()
        await super().send_packed_command(command, check_health)


class FailoverAwareSSLConnection(FailoverAwareConnection, SSLConnection):
    """The same over TLS."""


def _retry(role: Role) -> Retry:
    if role == "worker":
        # Rides out a Sentinel failover (2-3 s with down-after 1000 ms): 0.05 s doubling up to
        # 1 s, 15 times, about 12 s before a command gives up.
        return Retry(ExponentialBackoff(cap=1.0, base=0.05), 15)
    # An enqueue fails fast (the API answers 503 at once); the database keeps the truth and
    # reconcile queues again what did not reach Redis.
    return Retry(NoBackoff(), 1)


def sentinel_client(settings: Settings, *, role: Role, socket_timeout_s: float | None) -> aioredis.Redis:
    """A client of the primary that the Sentinels of REDIS_SENTINELS name, following failovers."""
    tls = settings.redis_tls_options()
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    sentinel_password = (settings.redis_sentinel_password.get_secret_value()
                         if settings.redis_sentinel_password else None)
    sentinel = Sentinel(
        settings.redis_sentinel_list,
        sentinel_kwargs={"socket_timeout": 1.0, "socket_connect_timeout": 1.0, "password": sentinel_password,
                         "username": settings.redis_sentinel_username, **tls},
        socket_timeout=socket_timeout_s, socket_connect_timeout=5.0, db=settings.redis_db, password=password,
        **tls)
    return sentinel.master_for(
        str(settings.redis_sentinel_master),
        connection_class=FailoverAwareSSLConnection if tls else FailoverAwareConnection,
        decode_responses=True,  # bullmq needs str replies; it sets this itself only for dicts
        retry=_retry(role), retry_on_error=[RedisConnectionError, RedisTimeoutError], health_check_interval=30)


def producer_client(settings: Settings) -> aioredis.Redis:
    """The JobQueue's client: one quick retry (a dropped idle connection), never minutes of them."""
    if settings.redis_sentinels:
        return sentinel_client(settings, role="producer", socket_timeout_s=PRODUCER_SOCKET_TIMEOUT_S)
    # A blocking pool makes calls beyond MAX_PRODUCER_CONNECTIONS wait for a connection.
    return _pooled_client(settings, max_connections=MAX_PRODUCER_CONNECTIONS, timeout_s=PRODUCER_SOCKET_TIMEOUT_S,
                          retry=_retry("producer"), health_check_interval=30)


def worker_connection(settings: Settings) -> dict[str, Any] | aioredis.Redis:
    """The bullmq Worker's `connection` option (bullmq closes it in Worker.close())."""
    if settings.redis_sentinels:
        return sentinel_client(settings, role="worker", socket_timeout_s=WORKER_SOCKET_TIMEOUT_S)
    return settings.redis_connection()


def worker_commands_client(settings: Settings, *, max_connections: int) -> aioredis.Redis | None:
    """A pooled client for the bullmq Worker's non-blocking commands, or None where its own
    client is pooled already (Sentinel: `worker_connection` is one pooled client for both).

    From a dict, bullmq builds single-connection clients: every command of every job in flight
    then waits for the one connection's lock and the reply before it. The retries are bullmq's
    own for those clients, so a Redis that goes away for a while is ridden out as before.
    """
    if settings.redis_sentinels:
        return None
    return _pooled_client(settings, max_connections=max_connections, timeout_s=WORKER_SOCKET_TIMEOUT_S,
                          retry=Retry(ExponentialBackoff(cap=20, base=1), 20),
                          retry_on_error=[BusyLoadingError, RedisConnectionError, RedisTimeoutError])


def _pooled_client(settings: Settings, *, max_connections: int, timeout_s: float, **options: Any) -> aioredis.Redis:
    """A client on a blocking pool of plain or TLS connections: a call beyond `max_connections`
    waits up to `timeout_s` for one (also the socket time-out), rather than failing."""
    conn = settings.redis_connection()
    conn["socket_timeout"] = timeout_s
    connection_class = aioredis.SSLConnection if conn.pop("ssl", False) else aioredis.Connection
    pool = aioredis.BlockingConnectionPool(max_connections=max_connections, timeout=timeout_s,
                                           connection_class=connection_class, decode_responses=True,
                                           **options, **conn)
    return aioredis.Redis.from_pool(pool)


def events_client(settings: Settings, *, socket_timeout_s: float | None) -> aioredis.Redis:
    """A client for pub/sub: `socket_timeout_s=None` for a subscriber that sits idle."""
    if settings.redis_sentinels:
        return sentinel_client(settings, role="events", socket_timeout_s=socket_timeout_s)
    return aioredis.Redis(**{**settings.redis_connection(), "socket_timeout": socket_timeout_s})


def explain_redis_failure(settings: Settings, exc: BaseException, what: str) -> str:
    """What went wrong while doing `what`, in words an operator can act on. redis-py gives no TLS
    error type (the ssl error is at most the implicit __context__, gone after retries): only its
    text tells a wrong CA from a missing client certificate."""
    msg = str(exc)
    where = f"Redis at {settings.redis_display}"
    # "Nothing was queued" only where something was being queued, not on a start-up check.
    lost = "; nothing was queued" if what.startswith("adding") else ""
    generic = f"{where} did not answer while {what} ({msg}){lost}."
    if "CERTIFICATE_VERIFY_FAILED" in msg:
        reason = msg.split("] ", 1)[-1].rstrip(".")
        ca = settings.redis_tls_ca_file
        trusted = (f"REDIS_TLS_CA_FILE={ca}" if ca is not None
                   else "the system's CA certificates (REDIS_TLS_CA_FILE unset)")
        return (f"the TLS certificate of {where} is not trusted by {trusted} ({reason}); set REDIS_TLS_CA_FILE to "
                "the CA that signed the server's certificate, and check that the certificate names the host")
    if "CERTIFICATE_REQUIRED" in msg or (settings.redis_tls and "Connection reset by peer" in msg):
        return (f"{where} refused the TLS client: it requires a client certificate; set REDIS_TLS_CERT_FILE and "
                "REDIS_TLS_KEY_FILE to a certificate and key signed by the CA it trusts")
    if not settings.redis_tls and "Connection reset by peer" in msg:
        return (f"{where} closed the connection at once ({msg}); if it accepts only TLS, use rediss:// or set "
                "REDIS_TLS_CA_FILE")
    if isinstance(exc, MasterNotFoundError):
        return (f"no Sentinel of REDIS_SENTINELS={settings.redis_sentinels} knows a healthy master "
                f"{settings.redis_sentinel_master!r} ({msg}); check REDIS_SENTINEL_MASTER, "
                "REDIS_SENTINEL_PASSWORD and that the Sentinels are running")
    if settings.redis_sentinels:
        return f"{generic} Check REDIS_SENTINELS, REDIS_SENTINEL_MASTER and REDIS_PASSWORD"
    return f"{generic} Check that Redis is running and REDIS_HOST/REDIS_PORT/REDIS_URL point at it"
