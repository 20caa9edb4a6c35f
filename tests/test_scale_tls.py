"""TLS to Redis: rediss:// with a CA and a client certificate made by the test; a wrong CA or a
missing client certificate is one clear line at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mediacache.domain import CacheStatus
from mediacache.errors import ConfigError, QueueUnavailableError
from mediacache.service import MediaCache
from mediacache.worker import CacheWorker
from tests.scale.servers import TlsRedis
from tests.support.origin import Origin
from tests.support.services import SettingsFactory
from tests.support.waiting import wait_until

# Redis here is the test's own TLS server; the database side needs no second backend.
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _tls(server: TlsRedis, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "redis_url": f"rediss://127.0.0.1:{server.port}/0", "redis_tls_ca_file": server.certs.ca,
        "redis_tls_cert_file": server.certs.client_cert, "redis_tls_key_file": server.certs.client_key,
    }
    values.update(overrides)
    return values


async def test_a_job_goes_round_trip_over_tls_with_client_certificates(
        make_settings: SettingsFactory, tls_only_redis: TlsRedis, origin: Origin) -> None:
    settings = make_settings(**_tls(tls_only_redis))
    assert settings.redis_display == f"rediss://127.0.0.1:{tls_only_redis.port}/0"
    async with MediaCache(settings) as cache:
        asset_id = await cache.cache_image(origin.url("/media/7.jpg?size=3000"))
        worker = CacheWorker(cache, concurrency=2)
        await worker.start()
        try:
            async def cached() -> bool:
                rec = await cache.get_asset(asset_id)
                return rec is not None and rec.status is CacheStatus.CACHED
            await wait_until(cached, what="the asset to be cached through the TLS Redis")
        finally:
            await worker.stop(grace_s=5)
        assert (await cache.queue_stats()).completed == 1


@pytest.mark.parametrize("use_worker", [False, True], ids=["producer", "worker"])
async def test_a_wrong_ca_is_one_line_naming_the_ca_file(
        make_settings: SettingsFactory, tls_only_redis: TlsRedis, use_worker: bool) -> None:
    wrong_ca = tls_only_redis.certs.other_ca
    async with MediaCache(make_settings(**_tls(tls_only_redis, redis_tls_ca_file=wrong_ca))) as cache:
        with pytest.raises(QueueUnavailableError) as caught:
            if use_worker:
                await CacheWorker(cache).start()
            else:
                await cache.ping_queue()
    message = str(caught.value)
    print(f"\nwrong CA: {message}")
    assert "\n" not in message
    assert f"REDIS_TLS_CA_FILE={wrong_ca}" in message
    assert "is not trusted" in message and "the CA that signed the server's certificate" in message


async def test_a_missing_client_certificate_says_which_settings_to_give(
        make_settings: SettingsFactory, tls_only_redis: TlsRedis) -> None:
    settings = make_settings(**_tls(tls_only_redis, redis_tls_cert_file=None, redis_tls_key_file=None))
    async with MediaCache(settings) as cache:
        with pytest.raises(QueueUnavailableError, match="requires a client certificate; set REDIS_TLS_CERT_FILE"):
            await cache.ping_queue()


def test_tls_and_sentinel_settings_are_checked_when_loaded(make_settings: SettingsFactory, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"REDIS_TLS_CA_FILE='.*missing\.pem' is not a readable file"):
        make_settings(redis_tls_ca_file=tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="REDIS_TLS_KEY_FILE is set without REDIS_TLS_CERT_FILE"):
        (tmp_path / "key.pem").write_text("x")
        make_settings(redis_tls_key_file=tmp_path / "key.pem")
    with pytest.raises(ConfigError, match="REDIS_SENTINEL_MASTER is not"):
        make_settings(redis_sentinels="127.0.0.1:26379")
    with pytest.raises(ConfigError, match="'nope' is not host:port"):
        make_settings(redis_sentinels="127.0.0.1:26379,nope", redis_sentinel_master="m")
    settings = make_settings(redis_sentinels="a:1, b:2", redis_sentinel_master="m", redis_db=3)
    assert settings.redis_sentinel_list == [("a", 1), ("b", 2)]
    assert settings.redis_display == "redis-sentinel://a:1,b:2/m/3"
    assert settings.redis_configured
