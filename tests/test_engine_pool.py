"""The engine's pool: a burst beyond it waits for a kept connection instead of opening and closing new ones."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from mediacache.backends import Backends
from mediacache.settings import load_settings

pytestmark = pytest.mark.usefixtures("clean_env")


async def _pids_of_a_burst(engine: AsyncEngine, statements: int) -> set[int]:
    async def one() -> int:
        async with engine.connect() as conn:
            # Long enough that the whole burst is in flight at once.
            return int((await conn.execute(text("SELECT pg_backend_pid() FROM pg_sleep(0.05)"))).scalar_one())

    return set(await asyncio.gather(*(one() for _ in range(statements))))


async def test_bursts_reuse_the_kept_connections_and_never_exceed_the_pool(
        pg_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", pg_database)
    monkeypatch.setenv("MEDIACACHE_DB_POOL_SIZE", "4")
    backends = Backends(load_settings())
    try:
        first = await _pids_of_a_burst(backends.engine, 12)
        second = await _pids_of_a_burst(backends.engine, 12)
    finally:
        await backends.engine.dispose()
    assert len(first) == 4
    # An overflow connection is closed when it comes back, so the second burst would see new backends.
    assert second == first


def test_a_process_keeps_twenty_connections_by_default() -> None:
    assert load_settings().db_pool_size == 20
