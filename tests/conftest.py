"""Shared fixtures: a real HTTP origin, SQLite and PostgreSQL databases, Redis under a private prefix."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import hypothesis
import pytest
import redis.asyncio as aioredis
from sqlalchemy import event

from mediacache.migrate import upgrade
from mediacache.service import MediaCache
from mediacache.settings import Settings, load_settings
from mediacache.worker import CacheWorker
from tests.origin import Origin

# Wall-clock deadlines per example fail on a busy machine for reasons that have nothing to do with
# the code; the properties are what these tests check, not speed (benchmarks do that).
hypothesis.settings.register_profile("mediacache", deadline=None)
hypothesis.settings.load_profile("mediacache")

PG_ADMIN_DSN = os.environ.get("MEDIACACHE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


@pytest.fixture(scope="session")
def origin() -> Iterator[Origin]:
    server = Origin().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database for this test session, migrated once and dropped at the end."""
    name = f"mediacache_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    upgrade(load_settings(database_url=url))
    yield url
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies, so no test pays for the migration."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(load_settings(database_url=f"sqlite+aiosqlite:///{path}",
                          data_dir=path.parent))
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


@pytest.fixture
def queue_prefix() -> str:
    return f"mctest-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def redis_cleanup(queue_prefix: str) -> AsyncIterator[None]:
    yield
    client = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    try:
        keys = [k async for k in client.scan_iter(match=f"{queue_prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(db_url: str, tmp_path: Path, queue_prefix: str, redis_cleanup: None) -> SettingsFactory:
    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": db_url, "data_dir": tmp_path / "data", "redis_host": REDIS_HOST,
            "redis_port": REDIS_PORT, "queue_prefix": queue_prefix, "signing_secret": "test-secret",
            "allowed_networks": "127.0.0.0/8",
        }
        values.update(overrides)
        return load_settings(**values)
    return factory


@pytest.fixture
async def cache(make_settings: SettingsFactory) -> AsyncIterator[MediaCache]:
    mc = MediaCache(make_settings())
    yield mc
    await mc.close()


WorkerFactory = Callable[..., Awaitable[CacheWorker]]


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


async def wait_until(predicate: Callable[[], Awaitable[bool]], *, timeout_s: float = 30.0,
                     interval_s: float = 0.05, what: str = "condition") -> None:
    """Polls `predicate` until it is true; fails the test with `what` after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(interval_s)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of the test's own, on its own port, that the test can stop and start."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is needed for this test (Debian package redis-server)"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--dir", str(self.workdir), "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("private redis-server exited") from None
                time.sleep(0.025)
        raise RuntimeError("private redis-server did not open its port")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis")
    server.workdir.mkdir()
    server.start()
    yield server
    server.stop()


@contextmanager
def count_queries(cache: MediaCache) -> Iterator[list[str]]:
    """The SQL statements `cache` sends while the block runs."""
    statements: list[str] = []

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(cache.engine.sync_engine, "before_cursor_execute", on_execute)
    try:
        yield statements
    finally:
        event.remove(cache.engine.sync_engine, "before_cursor_execute", on_execute)
