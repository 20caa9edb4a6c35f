"""The Redis client construction proposed for mediacache (docs/scale-notes.md), kept here so the
scale tests prove the very code the notes propose.

`RedisConfig` stands for the settings (REDIS_HOST/PORT/PASSWORD/DB or REDIS_URL, REDIS_SENTINELS,
REDIS_SENTINEL_MASTER, REDIS_SENTINEL_PASSWORD, REDIS_TLS_CA_FILE, REDIS_TLS_CERT_FILE,
REDIS_TLS_KEY_FILE). `redis_client()` builds one `redis.asyncio.Redis` for every case: plain, TLS,
Sentinel, Sentinel with TLS. bullmq 3.4.4 takes such an instance as `connection` for Queue and
Worker alike (its RedisConnection keeps an instance as it is; for a Worker it uses the same
instance, and so the same pool, for its blocking BZPOPMIN and its other commands).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

Role = Literal["producer", "worker"]


@dataclass(frozen=True)
class RedisConfig:
    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False  # rediss:// or REDIS_TLS_CA_FILE set
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str | None = None
    sentinel_password: str | None = None
    sentinel_username: str | None = None


class FailoverAwareConnection(SentinelManagedConnection):
    """Works around redis-py issue #3874 (open in 8.1.0 and on its main branch): a pooled
    connection that dropped and is retried in place reconnects through Connection.
    connect_check_health(), straight to the host and port it had, and never asks Sentinel again.
    After a failover a command in flight at the kill (for a worker: its BZPOPMIN, a moveToFinished)
    then retries the dead primary until its retries run out, and fails. Reconnecting through
    SentinelManagedConnection.connect() instead resolves the current primary first."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not self.is_connected:
            await self.connect()
        await super().send_packed_command(command, check_health)


class FailoverAwareSSLConnection(FailoverAwareConnection, SSLConnection):
    pass


def tls_kwargs(cfg: RedisConfig) -> dict[str, Any]:
    """redis-py's TLS keyword arguments (the same for a data node and for a Sentinel)."""
    if not (cfg.tls or cfg.tls_ca_file):
        return {}
    opts: dict[str, Any] = {"ssl": True, "ssl_cert_reqs": "required"}
    if cfg.tls_ca_file:
        opts["ssl_ca_certs"] = cfg.tls_ca_file
    if cfg.tls_cert_file:
        opts["ssl_certfile"] = cfg.tls_cert_file
        opts["ssl_keyfile"] = cfg.tls_key_file or cfg.tls_cert_file
    return opts


def connection_kwargs(cfg: RedisConfig, *, socket_timeout: float = 30.0) -> dict[str, Any]:
    """What Settings.redis_connection() returns today, plus TLS: keyword arguments of one node."""
    return {"host": cfg.host, "port": cfg.port, "db": cfg.db, "username": cfg.username, "password": cfg.password,
            "socket_timeout": socket_timeout, "socket_connect_timeout": 5.0, **tls_kwargs(cfg)}


def _retry(role: Role) -> Retry:
    if role == "producer":
        # An enqueue fails fast (the API answers 503 at once); the database keeps the truth and
        # reconcile queues again whatever did not reach Redis.
        return Retry(NoBackoff(), 1)
    # A worker rides out a Sentinel failover (about 2-3 s here with down-after 1000 ms):
    # 0.05, 0.1, 0.2, ... capped at 1 s, 15 retries: about 10 s before a command gives up.
    return Retry(ExponentialBackoff(cap=1.0, base=0.05), 15)


def redis_client(cfg: RedisConfig, *, role: Role) -> aioredis.Redis:
    """The client of a JobQueue (role="producer") or of the bullmq Worker (role="worker")."""
    socket_timeout = 5.0 if role == "producer" else 30.0  # > bullmq's 10 s longest BZPOPMIN
    common: dict[str, Any] = {
        "decode_responses": True,  # bullmq needs str replies; it sets this itself only for dicts
        "retry": _retry(role),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "health_check_interval": 30,
    }
    if not cfg.sentinels:
        return aioredis.Redis(**connection_kwargs(cfg, socket_timeout=socket_timeout), **common)
    if not cfg.sentinel_master:
        raise ValueError("REDIS_SENTINELS is set but REDIS_SENTINEL_MASTER is not")
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0,
                                       "password": cfg.sentinel_password, "username": cfg.sentinel_username,
                                       **tls_kwargs(cfg)}
    sentinel = Sentinel(list(cfg.sentinels), sentinel_kwargs=sentinel_kwargs,
                        socket_timeout=socket_timeout, socket_connect_timeout=5.0,
                        db=cfg.db, username=cfg.username, password=cfg.password, **tls_kwargs(cfg))
    connection_class = FailoverAwareSSLConnection if tls_kwargs(cfg) else FailoverAwareConnection
    return sentinel.master_for(cfg.sentinel_master, connection_class=connection_class, **common)
