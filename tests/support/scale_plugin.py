"""pytest fixtures for the scale tests: a Sentinel cluster, a TLS-only Redis and PgBouncer, each
started by tests/scale/servers.py for the test that asks and stopped afterwards.

A missing binary (redis-server, openssl, pgbouncer, psql) skips the test on a developer's machine
and fails it under CI (CI set), so CI cannot go green by skipping: .ci/run installs pgbouncer.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TypeVar

import pytest

from tests.scale import servers

SCALE_REDIS_PASSWORD = "redis-secret"
SCALE_SENTINEL_PASSWORD = "sentinel-secret"
T = TypeVar("T")


def serve(cm: contextlib.AbstractContextManager[T]) -> Iterator[T]:
    try:
        value = cm.__enter__()
    except FileNotFoundError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc} (CI must not skip the scale tests)")
        pytest.skip(str(exc))
    try:
        yield value
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture
def sentinels() -> Iterator[servers.SentinelCluster]:
    """A password-protected primary and replica, watched by three password-protected Sentinels."""
    yield from serve(servers.sentinel_cluster(password=SCALE_REDIS_PASSWORD, sentinel_password=SCALE_SENTINEL_PASSWORD))


@pytest.fixture(scope="module")
def tls_only_redis() -> Iterator[servers.TlsRedis]:
    """A TLS-only redis-server that requires client certificates, with certificates made by openssl."""
    yield from serve(servers.tls_redis(require_client_cert=True))


@pytest.fixture
def bouncer() -> Iterator[servers.PgBouncer]:
    """PgBouncer in transaction mode with one server connection in front of a fresh database: every
    client shares that connection, so whatever one leaves on it (a prepared statement) the next meets."""
    yield from serve(servers.pgbouncer(pool_size=1))
