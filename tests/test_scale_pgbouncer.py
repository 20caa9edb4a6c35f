"""mediacache through PgBouncer in transaction mode (one server connection shared by every client):
migrations, the core flow and the chaos run pass with MEDIACACHE_DB_PGBOUNCER=true, and no named
prepared statement is left on the server connection, whatever the engine's options become."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text

from mediacache.db.engine import create_engine
from mediacache.db.schema import upgrade_async
from mediacache.domain import CacheStatus
from mediacache.service import MediaCache
from mediacache.worker import CacheWorker
from tests.scale.servers import PgBouncer
from tests.support.origin import Origin
from tests.support.services import SettingsFactory
from tests.support.waiting import wait_until

BENCH = Path(__file__).resolve().parent.parent / "bench"


async def _named_statements(bouncer: PgBouncer) -> list[str]:
    """The named prepared statements on PgBouncer's one server connection: this connection gets
    the same one, so it sees what every other client left there."""
    conn = await asyncpg.connect(bouncer.url("postgresql"), statement_cache_size=0)
    try:
        return [row["name"] for row in await conn.fetch("SELECT name FROM pg_prepared_statements")]
    finally:
        await conn.close()


# The database is the test's own, behind PgBouncer; db_url only feeds make_settings' defaults.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_core_flow_through_pgbouncer_leaves_no_prepared_statement(
        make_settings: SettingsFactory, bouncer: PgBouncer, origin: Origin) -> None:
    settings = make_settings(database_url=bouncer.url("postgresql"), db_pgbouncer=True)
    await upgrade_async(settings)
    async with MediaCache(settings) as cache:
        urls = [origin.url(f"/media/{i}.jpg?size={2000 + i}") for i in range(20)]
        ids = await cache.cache_images(urls)
        worker = CacheWorker(cache, concurrency=8)
        await worker.start()
        try:
            async def all_cached() -> bool:
                return (await cache.cache_stats()).cached == len(ids)
            await wait_until(all_cached, what="20 assets cached through PgBouncer")
        finally:
            await worker.stop(grace_s=5)
        records = [await cache.get_asset(i) for i in ids]
        assert all(r is not None and r.status is CacheStatus.CACHED for r in records)
        resolved = await cache.get_urls(ids)
        assert all(u is not None and "/files/media/" in u for u in resolved), resolved
        assert await cache.get_url(ids[0]) is not None
        assert await cache.cleanup(days=0) == len(ids)
        assert await cache.get_asset(ids[0]) is None
        assert (await cache.cache_stats()).total == 0
    assert await _named_statements(bouncer) == []


async def test_the_guard_sees_named_statements_when_the_engine_keeps_them(bouncer: PgBouncer) -> None:
    """The control of the test above: without the setting, asyncpg's named statements stay on the
    server connection and the check finds them (so an engine change that brings them back fails it)."""
    engine = create_engine(bouncer.url("postgresql+asyncpg"), pool_size=1, pgbouncer=False)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT CAST(:n AS int)"), {"n": 1})
    finally:
        await engine.dispose()
    assert any(name.startswith("__asyncpg_stmt_") for name in await _named_statements(bouncer))


async def _failures(bouncer: PgBouncer) -> list[dict[str, object]]:
    conn = await asyncpg.connect(bouncer.url("postgresql"), statement_cache_size=0)
    try:
        rows = await conn.fetch("SELECT error_kind, error, attempts FROM cache_assets WHERE status = 'FAILED'")
        return [dict(r) for r in rows]
    finally:
        await conn.close()


def test_chaos_run_through_pgbouncer(bouncer: PgBouncer, tmp_path: Path) -> None:
    """bench/chaos.py, smoke size: `mediacache db upgrade` and worker processes SIGKILLed and
    restarted, all sharing PgBouncer's one server connection."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "chaos.py"), "--assets", "100", "--workers", "2", "--kill-every-s", "0.25",
         "--deadline-s", "90", "--database-url", bouncer.url("postgresql"), "--db-pgbouncer"],
        capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\nchaos through PgBouncer: {result}")
    outcome = (result["cached"], result["stuck"], result["duplicated"], result["sha256_mismatches"])
    assert outcome == (100, 0, 0, 0), asyncio.run(_failures(bouncer))
    assert result["kills"] >= 1
