"""Bug 3 (a proposal): two deployments on one Redis database and prefix, each with its own database.

The queue records which database it belongs to at `{prefix}:media-cache:mediacache:owner`; a
producer or worker on another database refuses to start, naming both and the settings that part them.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from prototype import (
    QueueOwnerMismatchError,
    claim_queue_owner,
    database_display_url,
    database_identity,
    owner_key,
)
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from support import QUEUE

REDIS_DISPLAY = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def engines() -> AsyncIterator[Callable[[str], AsyncEngine]]:
    made: list[AsyncEngine] = []

    def make(url: str) -> AsyncEngine:
        made.append(create_async_engine(url))
        return made[-1]

    yield make
    for engine in made:
        await engine.dispose()


async def _claim(redis: Any, prefix: str, engine: AsyncEngine, url: str, role: str = "worker") -> str:
    identity = await database_identity(engine, url)
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
