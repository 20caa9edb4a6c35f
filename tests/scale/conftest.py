"""Fixtures of the scale tests: Sentinel, TLS Redis and PgBouncer, each started for the tests
that ask for them and stopped afterwards (see servers.py). Nothing here uses the suite's
tests/conftest.py fixtures or the shared Redis on 6379.

A missing binary skips the test on a developer's machine and fails it under CI (CI=true), so CI
cannot go green by skipping: .ci/run must install pgbouncer.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TypeVar

import pytest

from tests.scale import servers

SENTINEL_PASSWORD = "sentinel-secret"
REDIS_PASSWORD = "redis-secret"
T = TypeVar("T")


def _serve(cm: contextlib.AbstractContextManager[T]) -> Iterator[T]:
    try:
        value = cm.__enter__()
    except FileNotFoundError as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    try:
        yield value
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture
def sentinel_cluster() -> Iterator[servers.SentinelCluster]:
    """A password-protected primary and replica, watched by three password-protected Sentinels."""
    yield from _serve(servers.sentinel_cluster(password=REDIS_PASSWORD, sentinel_password=SENTINEL_PASSWORD))


@pytest.fixture(scope="module")
def tls_redis() -> Iterator[servers.TlsRedis]:
    """A TLS-only redis-server that requires client certificates."""
    yield from _serve(servers.tls_redis(require_client_cert=True))


@pytest.fixture
def pgbouncer() -> Iterator[servers.PgBouncer]:
    """PgBouncer in transaction mode, 5 server connections, in front of a fresh database."""
    yield from _serve(servers.pgbouncer(pool_size=5))


@pytest.fixture
def pgbouncer_single() -> Iterator[servers.PgBouncer]:
    """PgBouncer in transaction mode with one server connection: every client shares it."""
    yield from _serve(servers.pgbouncer(pool_size=1))
