"""The suite's fixtures, each defined once: origins, SQLite and PostgreSQL databases, Redis under a private
prefix, caches, workers and the HTTP service. Helpers they use live in `tests.support`."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import hypothesis
import pytest
import redis.asyncio as aioredis

from mediacache.db.schema import upgrade
from mediacache.service import MediaCache
from mediacache.settings import Settings, load_settings
from mediacache.worker import CacheWorker
from tests.support.api import Api, running_api
from tests.support.hostile_origin import HostileOrigin
from tests.support.node import ensure_node_bullmq
from tests.support.origin import Origin
from tests.support.processes import PrivateRedis
from tests.support.services import (
    MEDIACACHE_ENV_PREFIXES,
    PG_ADMIN_DSN,
    REDIS_DB,
    REDIS_HOST,
    REDIS_PORT,
    SettingsFactory,
    WorkerFactory,
)

# Wall-clock deadlines per example fail on a busy machine for reasons that have nothing to do with
# the code; the properties are what these tests check, not speed (benchmarks do that).
hypothesis.settings.register_profile("mediacache", deadline=None)
hypothesis.settings.load_profile("mediacache")

# A test that uses any of these talks to Redis, PostgreSQL or S3: it is marked `services`, so that
# `pytest -m "not services"` runs the pure tests in seconds on a machine without them.
SERVICE_FIXTURES = frozenset({
    "db_url", "pg_database", "sqlite_template", "make_settings", "cache", "start_worker", "redis_cleanup",
    "private_redis", "s3_server", "s3_bucket", "api", "queue_prefix", "sentinels", "tls_only_redis", "bouncer",
})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)

pytest_plugins = ["tests.support.s3_plugin", "tests.support.scale_plugin"]


@pytest.fixture(scope="session")
def origin() -> Iterator[Origin]:
    server = Origin().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def node_bullmq() -> None:
    """Node BullMQ (tests/interop/node_modules), installed with `npm ci` if missing."""
    ensure_node_bullmq()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database for this test session, migrated once and dropped at the end."""
    name = f"mediacache_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    upgrade(load_settings(env_file=None, database_url=url))
    yield url
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of its own, not migrated: for tests of the migrations themselves."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    name = f"mediacache_mig_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies, so no test pays for the migration."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(load_settings(env_file=None, database_url=f"sqlite+aiosqlite:///{path}", data_dir=path.parent))
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "mediacache.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    url = request.getfixturevalue("pg_database")
    asyncio.run(_truncate(url))
    yield url


async def _truncate(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'")
        if tables:
            await conn.execute("TRUNCATE " + ", ".join(f'"{t["tablename"]}"' for t in tables) + " CASCADE")
    finally:
        await conn.close()


@pytest.fixture(autouse=True)
def away_from_dotenv(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in an empty directory of its own: no `.env` of the developer's checkout is read,
    neither by settings built in the test nor by the `mediacache` processes it starts."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture
def queue_prefix() -> str:
    return f"mctest-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def redis_cleanup(queue_prefix: str) -> AsyncIterator[None]:
    yield
    # The database make_settings names, whatever REDIS_DB the shell or a .env would say.
    client = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    try:
        keys = [k async for k in client.scan_iter(match=f"{queue_prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
def make_settings(db_url: str, tmp_path: Path, queue_prefix: str, redis_cleanup: None) -> SettingsFactory:
    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": db_url, "data_dir": tmp_path / "data", "redis_host": REDIS_HOST,
            "redis_port": REDIS_PORT, "redis_db": REDIS_DB, "queue_prefix": queue_prefix,
            "signing_secret": "test-secret", "allowed_networks": "127.0.0.0/8",
        }
        values.update(overrides)
        # Explicit settings only: no .env file, wherever the test runs.
        return load_settings(env_file=None, **values)
    return factory


@pytest.fixture
async def cache(make_settings: SettingsFactory) -> AsyncIterator[MediaCache]:
    mc = MediaCache(make_settings())
    yield mc
    await mc.close()


@pytest.fixture
async def start_worker(cache: MediaCache) -> AsyncIterator[WorkerFactory]:
    """Starts in-process workers on the test's queue; stops them at the end of the test."""
    started: list[CacheWorker] = []

    async def factory(mc: MediaCache | None = None, **kwargs: Any) -> CacheWorker:
        w = CacheWorker(mc or cache, **kwargs)
        await w.start()
        started.append(w)
        return w

    yield factory
    for w in started:
        await w.stop(grace_s=5)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis")
    server.workdir.mkdir()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def api(make_settings: SettingsFactory) -> AsyncIterator[Api]:
    """The HTTP service with an in-process worker on a free port of 127.0.0.1."""
    async with running_api(make_settings) as running:
        yield running


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileOrigin]:
    """The hostile origin on 127.0.0.2 (and friends); it fails the module if its canary was reached."""
    server = HostileOrigin().start()
    yield server
    try:
        assert server.canary_connections == 0, f"the canary was reached from {server.canary and server.canary.peers}"
    finally:
        server.stop()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No mediacache variable from the shell, and no stray ./.env: settings come from the test alone."""
    for name in list(os.environ):
        if name.startswith(MEDIACACHE_ENV_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
