"""TLS to Redis: a job round trip through bullmq over a TLS-only redis-server with client
certificates, and the exact errors of a wrong CA, a missing client certificate and a plain client."""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis
from bullmq import Queue, Worker
from redis.asyncio.connection import SSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.scale.redis_clients import RedisConfig, redis_client
from tests.scale.servers import TlsRedis


def _config(tls: TlsRedis, **overrides: Any) -> RedisConfig:
    values: dict[str, Any] = {"host": "127.0.0.1", "port": tls.port, "tls": True,
                              "tls_ca_file": str(tls.certs.ca), "tls_cert_file": str(tls.certs.client_cert),
                              "tls_key_file": str(tls.certs.client_key)}
    values.update(overrides)
    return RedisConfig(**values)


async def _round_trip(queue_conn: Any, worker_conn: Any) -> dict[str, Any]:
    prefix = f"mcscale-{uuid.uuid4().hex[:8]}"
    done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def process(job: Any, token: str) -> dict[str, Any]:
        return {"echo": job.data["n"] * 2}

    def on_completed(job: Any, result: Any, *_: Any) -> None:
        if not done.done():
            done.set_result(result)

    queue = Queue("tls-q", {"connection": queue_conn, "prefix": prefix})
    worker = Worker("tls-q", process, {"connection": worker_conn, "prefix": prefix, "autorun": False})
    worker.on("completed", on_completed)
    run = asyncio.create_task(worker.run())
    try:
        job = await queue.add("tls-job", {"n": 21})
        result = await asyncio.wait_for(done, timeout=15)
        state = await queue.getJobState(job.id)
        return {"result": result, "state": state}
    finally:
        await worker.close()
        await asyncio.wait({run}, timeout=10)
        await queue.obliterate(force=True)
        await queue.close()


async def test_job_round_trip_with_dict_connection(tls_only_redis: TlsRedis) -> None:
    """The way mediacache passes its connection today: a dict, from which bullmq builds its own
    clients (Queue: one; Worker: two, one of them for BZPOPMIN). redis-py's ssl_* options go
    straight through."""
    conn = tls_only_redis.connection()
    out = await _round_trip(dict(conn), dict(conn))
    assert out == {"result": {"echo": 42}, "state": "completed"}


async def test_job_round_trip_with_proposed_client(tls_only_redis: TlsRedis) -> None:
    cfg = _config(tls_only_redis)
    producer, worker_client = redis_client(cfg, role="producer"), redis_client(cfg, role="worker")
    try:
        out = await _round_trip(producer, worker_client)
    finally:
        await producer.aclose()
        await worker_client.aclose()
    assert out == {"result": {"echo": 42}, "state": "completed"}


async def _fail_fast(cfg: RedisConfig) -> tuple[RedisConnectionError, float]:
    client = redis_client(cfg, role="producer")
    t0 = time.monotonic()
    try:
        with pytest.raises(RedisConnectionError) as info:
            await client.ping()
    finally:
        await client.aclose()
    return info.value, time.monotonic() - t0


async def test_wrong_ca_is_a_connection_error_naming_certificate_verification(tls_only_redis: TlsRedis) -> None:
    """redis-py raises its own ConnectionError with the ssl error's text in the message. The
    ssl.SSLCertVerificationError is only the implicit __context__ before redis-py 8.2 and its
    __cause__ from 8.2 on, so a clear start-up error for every supported version has to match the
    message, not the chain."""
    err, elapsed = await _fail_fast(_config(tls_only_redis, tls_ca_file=str(tls_only_redis.certs.other_ca)))
    print(f"\nwrong CA after {elapsed:.2f} s: {type(err).__module__}.{type(err).__name__}: {err}"
          f"\n  __cause__={err.__cause__!r} __context__={err.__context__!r}")
    assert elapsed < 2
    assert str(err).startswith(f"Error 1 connecting to 127.0.0.1:{tls_only_redis.port}. "
                               "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
                               "self-signed certificate in certificate chain")
    for linked in (err.__cause__, err.__context__):
        assert linked is None or isinstance(linked, ssl.SSLCertVerificationError)


async def test_missing_client_certificate_is_an_alert_or_a_reset(tls_only_redis: TlsRedis) -> None:
    """With TLS 1.3 the server checks the client certificate after the client has finished its
    handshake, so the client sees the alert or only the reset that follows it, depending on timing
    (both were seen here), and either is raised at the first read, not at connect time."""
    messages = set()
    for _ in range(6):
        err, elapsed = await _fail_fast(_config(tls_only_redis, tls_cert_file=None, tls_key_file=None))
        assert elapsed < 2
        messages.add(str(err).replace(str(tls_only_redis.port), "PORT"))
    print("\nno client cert:", *sorted(messages), sep="\n  ")
    assert messages <= {
        "Error while reading from 127.0.0.1:PORT : (1, '[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert "
        "certificate required (_ssl.c:2580)')",
        "Error while reading from 127.0.0.1:PORT : (104, 'Connection reset by peer')",
    }


async def test_plain_client_on_the_tls_port_sees_a_reset(tls_only_redis: TlsRedis) -> None:
    err, elapsed = await _fail_fast(RedisConfig(host="127.0.0.1", port=tls_only_redis.port))
    print(f"\nplain client after {elapsed:.2f} s: {type(err).__name__}: {err}")
    assert elapsed < 2
    assert str(err) == f"Error while reading from 127.0.0.1:{tls_only_redis.port} : (104, 'Connection reset by peer')"


async def test_bullmq_own_clients_keep_retrying_a_bad_certificate(tls_only_redis: TlsRedis) -> None:
    """bullmq's clients built from a dict retry ConnectionError 20 times with backoff up to 20 s:
    a bad CA shows up minutes late. The start-up check must use a client of our own that fails fast
    (as JobQueue's ping does today, Retry(NoBackoff(), 1)); so must the default redis-py client,
    whose 3 retries with backoff take about 4 s here."""
    conn = tls_only_redis.connection(ssl_ca_certs=str(tls_only_redis.certs.other_ca))
    queue = Queue("tls-bad", {"connection": conn, "prefix": "mcscale-bad"})
    try:
        counts = asyncio.create_task(queue.getJobCounts("waiting"))
        done, _ = await asyncio.wait({counts}, timeout=5)
        assert not done, "bullmq gave up on a bad certificate within 5 s"
        counts.cancel()
        await asyncio.wait({counts})
    finally:
        await queue.close()

    plain = aioredis.Redis(**conn)  # redis-py's default retry
    t0 = time.monotonic()
    try:
        with pytest.raises(RedisConnectionError):
            await plain.ping()
    finally:
        await plain.aclose()
    print(f"\nredis-py default retry gave up after {time.monotonic() - t0:.2f} s")


async def test_sentinel_with_tls_builds_tls_connections_to_sentinels_and_primary(tls_only_redis: TlsRedis) -> None:
    """Construction only (no TLS Sentinel is started): with REDIS_TLS_* and REDIS_SENTINELS both set,
    the primary's connections are FailoverAwareSSLConnection with the certificates, and the
    Sentinel clients get the same TLS options."""
    from tests.scale.redis_clients import FailoverAwareSSLConnection

    cfg = _config(tls_only_redis, sentinels=(("127.0.0.1", 1),), sentinel_master="m", sentinel_password="s")
    client = redis_client(cfg, role="worker")
    try:
        pool = client.connection_pool
        assert pool.connection_class is FailoverAwareSSLConnection
        kw = pool.connection_kwargs
        assert (kw["ssl_ca_certs"], kw["ssl_certfile"], kw["ssl_cert_reqs"]) == (
            str(tls_only_redis.certs.ca), str(tls_only_redis.certs.client_cert), "required")
        sentinel_pool = pool.sentinel_manager.sentinels[0].connection_pool
        assert issubclass(sentinel_pool.connection_class, SSLConnection)
        sentinel_kw = sentinel_pool.connection_kwargs
        assert sentinel_kw["password"] == "s" and sentinel_kw["ssl_ca_certs"] == str(tls_only_redis.certs.ca)
    finally:
        await client.aclose()
