"""A queue knows which database it belongs to: two deployments on one Redis database and prefix.

The queue records its database at `{prefix}:media-cache:mediacache:owner`; a producer or worker on
another database refuses to start, naming both and the settings that part them.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from mediacache.broker.jobs import QUEUE_NAME as QUEUE
from mediacache.broker.owner import DatabaseIdentity, claim_queue_owner, database_display_url, owner_key
from mediacache.db.columns import utcnow
from mediacache.db.engine import create_engine
from mediacache.db.instance import instance_id
from mediacache.db.models import CacheAsset
from mediacache.db.schema import upgrade_async
from mediacache.errors import QueueOwnerMismatchError
from mediacache.service import MediaCache
from mediacache.settings import load_settings
from mediacache.worker import CacheWorker
from tests.support.origin import Origin
from tests.support.services import REDIS_HOST, REDIS_PORT, SettingsFactory, WorkerFactory
from tests.support.waiting import wait_until

REDIS_DISPLAY = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def prefix(queue_prefix: str, redis_cleanup: None) -> str:
    return queue_prefix


@pytest.fixture
async def engines(tmp_path: Path) -> AsyncIterator[Callable[[str], AsyncEngine]]:
    made: list[AsyncEngine] = []

    def make(url: str) -> AsyncEngine:
        made.append(create_engine(url))
        return made[-1]

    yield make
    for engine in made:
        await engine.dispose()


async def _claim(redis: Any, prefix: str, engine: AsyncEngine, url: str, role: Any = "worker") -> str:
    await upgrade_async(load_settings(database_url=url, data_dir=Path.cwd()))
    identity = DatabaseIdentity(await instance_id(engine, url), database_display_url(url))
    return await claim_queue_owner(redis, prefix=prefix, queue_name=QUEUE, identity=identity,
                                   redis_display=REDIS_DISPLAY, redis_db=0, role=role)


async def test_the_first_process_binds_the_queue_and_the_same_database_is_welcome(prefix, redis, engines, tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"
    assert await _claim(redis, prefix, engines(url), url) == "claimed"
    stored = json.loads(await redis.get(owner_key(prefix, QUEUE)))
    assert owner_key(prefix, QUEUE) == f"{prefix}:media-cache:mediacache:owner"
    assert stored["database"] == f"sqlite:///{tmp_path / 'a.db'}"
    assert stored["claimedBy"].startswith("worker@")
    # Another process on the same database: a producer, a second worker, a restart.
    assert await _claim(redis, prefix, engines(url), url, role="producer") == "same"
    assert json.loads(await redis.get(owner_key(prefix, QUEUE)))["instanceId"] == stored["instanceId"]


async def test_a_process_on_another_database_refuses_naming_both_and_the_settings(prefix, redis, engines, tmp_path):
    first, second = f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", f"sqlite+aiosqlite:///{tmp_path / 'b.db'}"
    await _claim(redis, prefix, engines(first), first)
    with pytest.raises(QueueOwnerMismatchError) as refused:
        await _claim(redis, prefix, engines(second), second, role="producer")
    message = str(refused.value)
    assert f"sqlite:///{tmp_path / 'a.db'}" in message and f"sqlite:///{tmp_path / 'b.db'}" in message
    assert f"MEDIACACHE_QUEUE_PREFIX (now '{prefix}')" in message and "REDIS_DB (now 0)" in message
    assert "this producer uses" in message and REDIS_DISPLAY in message
    # Another prefix is another queue: the second deployment starts once it has its own.
    try:
        assert await _claim(redis, f"{prefix}-b", engines(second), second) == "claimed"
    finally:
        await redis.delete(owner_key(f"{prefix}-b", QUEUE))


async def test_two_databases_under_one_url_are_told_apart(prefix, redis, engines, tmp_path, monkeypatch):
    """The same relative URL from two directories names two files: the instance id decides."""
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "one")
    url = "sqlite+aiosqlite:///./media.db"
    await _claim(redis, prefix, engines(url), url)
    monkeypatch.chdir(tmp_path / "two")
    with pytest.raises(QueueOwnerMismatchError):
        await _claim(redis, prefix, engines(url), url)


async def test_the_same_database_under_a_new_url_is_accepted_and_recorded(prefix, redis, engines, tmp_path):
    old, new = tmp_path / "a.db", tmp_path / "moved.db"
    await _claim(redis, prefix, engines(f"sqlite+aiosqlite:///{old}"), f"sqlite+aiosqlite:///{old}")
    os.replace(old, new)
    assert await _claim(redis, prefix, engines(f"sqlite+aiosqlite:///{new}"), f"sqlite+aiosqlite:///{new}") == "moved"
    assert json.loads(await redis.get(owner_key(prefix, QUEUE)))["database"] == f"sqlite:///{new}"


def test_the_recorded_url_has_no_password_and_one_spelling(tmp_path: Path, monkeypatch):
    assert database_display_url("postgresql+asyncpg://app:s3cret@db1:5432/media") == "postgresql://app@db1:5432/media"
    assert database_display_url("postgres://app:s3cret@db1/media") == "postgresql://app@db1/media"
    monkeypatch.chdir(tmp_path)
    assert database_display_url("sqlite:///./x.db") == database_display_url(f"sqlite+aiosqlite:///{tmp_path}/x.db")


# db_url rather than pg_database: it empties the database first, so no asset of an earlier test
# makes the worker's local-storage placement check refuse before the queue check is reached.
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_postgresql_deployment_on_the_queue_of_a_sqlite_one_refuses_naming_both(
        sqlite_template: Path, db_url: str, tmp_path: Path, prefix: str, origin: Origin) -> None:
    pg_database = db_url
    sqlite_path = tmp_path / "a.db"
    sqlite_path.write_bytes(sqlite_template.read_bytes())
    shared = {"redis_host": REDIS_HOST, "redis_port": REDIS_PORT, "queue_prefix": prefix,
              "signing_secret": "test-secret", "allowed_networks": "127.0.0.0/8"}
    lite = MediaCache(load_settings(database_url=f"sqlite+aiosqlite:///{sqlite_path}", data_dir=tmp_path / "a",
                                    **shared))
    pg = MediaCache(load_settings(database_url=pg_database, data_dir=tmp_path / "b", **shared))
    worker = CacheWorker(lite)
    try:
        await worker.start()
        asset_id = await lite.cache_image(origin.url("/media/1.jpg?size=2000"))

        with pytest.raises(QueueOwnerMismatchError) as refused_producer:
            await pg.cache_image(origin.url("/media/2.jpg?size=2000"))
        message = str(refused_producer.value)
        assert "\n" not in message
        assert f"sqlite:///{sqlite_path}" in message
        assert database_display_url(pg_database) in message and "postgresql://" in message
        assert f"MEDIACACHE_QUEUE_PREFIX (now '{prefix}')" in message and "REDIS_DB (now 0)" in message
        assert (await pg.cache_stats()).pending == 0  # nothing written without a job

        with pytest.raises(QueueOwnerMismatchError, match="this worker uses the database postgresql://"):
            await CacheWorker(pg).check()

        async def cached() -> bool:
            asset = await lite.get_asset(asset_id)
            return asset is not None and asset.status.value == "CACHED"
        await wait_until(cached, timeout_s=20, what="the first deployment's asset")
    finally:
        await worker.stop(grace_s=5)
        await lite.close()
        await pg.close()


async def test_a_job_whose_asset_is_missing_is_logged_as_a_warning(
        cache: MediaCache, start_worker: WorkerFactory, caplog: pytest.LogCaptureFixture) -> None:
    await start_worker()
    missing = uuid.uuid4()
    await cache.backends.queue.add(missing, "http://127.0.0.1:9/x.jpg")  # a job whose asset is elsewhere

    async def warned() -> bool:
        return any(getattr(r, "asset_id", None) == str(missing) and r.levelname == "WARNING" for r in caplog.records)
    with caplog.at_level("WARNING", logger="mediacache.worker"):
        await wait_until(warned, timeout_s=15, what="the warning about the missing asset")
    [record] = [r for r in caplog.records if getattr(r, "asset_id", None) == str(missing)]
    assert "no such asset" in record.getMessage() and "MEDIACACHE_QUEUE_PREFIX" in record.getMessage()


async def test_reconcile_requeues_a_pending_asset_that_has_no_job(
        make_settings: SettingsFactory, start_worker: WorkerFactory, origin: Origin) -> None:
    async with MediaCache(make_settings()) as mc:
        # Written, but its job never reached Redis (a producer killed between the two, a flush).
        asset_id = uuid.uuid4()
        await mc.backends.assets.insert_pending([(asset_id, origin.url("/media/7.jpg?size=1500"))])
        # Younger than the default min_age_s of 60 s, older than the moment a job takes to be added.
        await _backdate(mc, asset_id, seconds=10)
        assert (await mc.backends.queue.job_states([asset_id]))[asset_id] == "missing"

        report = await mc.reconcile()
        assert report.requeued == 1
        assert (await mc.backends.queue.job_states([asset_id]))[asset_id] == "live"
        assert (await mc.reconcile()).requeued == 0  # its job is there now

        await start_worker(mc)

        async def cached() -> bool:
            asset = await mc.get_asset(asset_id)
            return asset is not None and asset.status.value == "CACHED"
        await wait_until(cached, timeout_s=20, what="the requeued asset")


async def _backdate(mc: MediaCache, asset_id: uuid.UUID, *, seconds: float) -> None:
    async with mc.backends.engine.begin() as conn:
        await conn.execute(update(CacheAsset).where(CacheAsset.id == asset_id)
                           .values(updated_at=utcnow() - timedelta(seconds=seconds)))
