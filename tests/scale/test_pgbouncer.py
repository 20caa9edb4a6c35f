"""PgBouncer in transaction pool mode in front of PostgreSQL, with SQLAlchemy async + asyncpg.

In transaction mode each transaction may run on another server connection, so a named prepared
statement made in one transaction is missing in the next (or, made by another process under the
same name, already there). asyncpg's `statement_cache_size=0` makes it use the unnamed statement,
re-parsed in the same message batch as each execution: that alone is enough, and leaves nothing
behind on the server connections.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import mediacache.db.schema
from mediacache.db.engine import create_engine
from mediacache.db.schema import check_migrated, head_revision, upgrade
from mediacache.errors import DatabaseError
from mediacache.settings import load_settings
from tests.scale.servers import PgBouncer

TASKS = 20
SECONDS = 3.0
ROWS = 20
PGBOUNCER_SAFE = {"statement_cache_size": 0}  # the whole fix, for asyncpg >= 0.22 (SQLAlchemy's cache may stay)
SQLALCHEMY_DOCS_RECIPE = {"prepared_statement_name_func": lambda: f"__asyncpg_{uuid.uuid4()}__",
                          "prepared_statement_cache_size": 0}

BUMP = text("UPDATE counters SET n = n + 1 WHERE id = :id RETURNING id, n")
TAG = text("UPDATE counters SET n = n + :k, tag = :tag WHERE id = :id RETURNING id, n, tag")


async def _prepare_table(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(
            "CREATE TABLE IF NOT EXISTS counters (id int PRIMARY KEY, n bigint NOT NULL, tag text)"))
        await conn.execute(text("TRUNCATE counters"))
        await conn.execute(text(f"INSERT INTO counters SELECT g, 0, NULL FROM generate_series(1, {ROWS}) g"))


async def _load(engine: AsyncEngine, *, seconds: float = SECONDS, stop_at_errors: int = 0) -> dict[str, Any]:
    """TASKS tasks, each a loop of one-statement transactions for `seconds`: two different
    UPDATE ... RETURNING statements, so that an unnamed statement of one cannot be confused with the
    other's. Returns counts, errors and wrong answers."""
    ok = {"bump": 0, "tag": 0}
    errors: list[BaseException] = []
    wrong: list[Any] = []
    deadline = time.monotonic() + seconds

    async def task(i: int) -> None:
        k = 0
        while time.monotonic() < deadline and not (stop_at_errors and len(errors) >= stop_at_errors):
            k += 1
            row_id = (i + k) % ROWS + 1
            try:
                async with engine.begin() as conn:
                    if k % 2:
                        got = (await conn.execute(BUMP, {"id": row_id})).one()
                        if got[0] != row_id:
                            wrong.append(("bump", row_id, tuple(got)))
                        ok["bump"] += 1
                    else:
                        tag = f"t{i}-{k}"
                        got = (await conn.execute(TAG, {"id": row_id, "k": 2, "tag": tag})).one()
                        if got[0] != row_id or got[2] != tag:
                            wrong.append(("tag", row_id, tag, tuple(got)))
                        ok["tag"] += 1
            except DBAPIError as exc:
                errors.append(exc)

    t0 = time.monotonic()
    await asyncio.gather(*(task(i) for i in range(TASKS)))
    elapsed = time.monotonic() - t0
    async with engine.connect() as conn:
        total = (await conn.execute(text("SELECT sum(n) FROM counters"))).scalar_one()
    return {"ok": ok, "errors": errors, "wrong": wrong, "elapsed": elapsed, "sum": total,
            "per_s": round(sum(ok.values()) / elapsed)}


async def _prepared_left(url: str, servers: int) -> list[int]:
    """pg_prepared_statements of each server connection, read through PgBouncer: `servers`
    transactions held open at once land on `servers` different server connections."""
    engine = create_async_engine(url, pool_size=servers, connect_args=PGBOUNCER_SAFE)
    barrier = asyncio.Barrier(servers)

    async def one() -> tuple[int, int]:
        async with engine.begin() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            n = (await conn.execute(text("SELECT count(*) FROM pg_prepared_statements"))).scalar_one()
            await barrier.wait()
            return pid, n

    try:
        rows = dict(await asyncio.gather(*(one() for _ in range(servers))))
    finally:
        await engine.dispose()
    assert len(rows) == servers
    return sorted(rows.values())


def _figures(name: str, out: dict[str, Any], **more: Any) -> None:
    print(f"\nPGBOUNCER-FIGURES {name} " + json.dumps({
        "transactions": sum(out["ok"].values()), "per_s": out["per_s"], "errors": len(out["errors"]),
        "wrong": len(out["wrong"]), **more}))


async def test_mediacache_engine_breaks_in_transaction_mode(pgbouncer: PgBouncer) -> None:
    """The engine as mediacache builds it today (db/engine.py create_engine), through PgBouncer."""
    engine = create_engine(pgbouncer.url())
    try:
        await _prepare_table(engine)
        out = await _load(engine, seconds=2.0, stop_at_errors=20)
    finally:
        await engine.dispose()
    assert out["errors"], "expected prepared-statement errors through PgBouncer in transaction mode"
    first = out["errors"][0]
    driver_error = first.orig.__cause__
    print(f"\n{type(first).__module__}.{type(first).__name__} <- {type(driver_error).__module__}."
          f"{type(driver_error).__name__}: {str(first).splitlines()[0]}")
    _figures("mediacache-default", out)
    assert isinstance(driver_error, asyncpg.exceptions.InvalidSQLStatementNameError
                      | asyncpg.exceptions.DuplicatePreparedStatementError)
    assert "prepared statement \"__asyncpg_stmt_" in str(first)


@pytest.mark.parametrize(("route", "variant"), [
    ("pgbouncer", "statement_cache_size=0"),
    ("pgbouncer", "sqlalchemy-docs-recipe"),
    ("direct", "default"),
    ("direct", "statement_cache_size=0"),
])
async def test_twenty_tasks_of_update_returning(pgbouncer: PgBouncer, route: str, variant: str) -> None:
    """Through PgBouncer both fixes run without an error; the direct routes are the baseline (the
    price of the setting without PgBouncer)."""
    args = {"default": {}, "statement_cache_size=0": PGBOUNCER_SAFE, "sqlalchemy-docs-recipe": SQLALCHEMY_DOCS_RECIPE}
    url = pgbouncer.url() if route == "pgbouncer" else f"postgresql+asyncpg://postgres@127.0.0.1:5432/{pgbouncer.database}"
    # pool_size/max_overflow as mediacache's create_engine; 20 clients share 5 server connections.
    engine = create_async_engine(url, pool_size=10, max_overflow=10, pool_recycle=1800, connect_args=args[variant])
    try:
        await _prepare_table(engine)
        out = await _load(engine)
    finally:
        await engine.dispose()
    more: dict[str, Any] = {}
    if route == "pgbouncer":
        more["prepared_statements_left_per_server_connection"] = left = await _prepared_left(url, servers=5)
    _figures(f"{route}/{variant}", out, **more)
    assert not out["errors"], [str(e).splitlines()[0] for e in out["errors"][:3]]
    assert not out["wrong"]
    assert out["sum"] == out["ok"]["bump"] + 2 * out["ok"]["tag"]
    assert sum(out["ok"].values()) > 100
    if route == "pgbouncer" and variant == "statement_cache_size=0":
        assert left == [0] * 5  # unnamed statements only: nothing accumulates
    elif route == "pgbouncer":
        assert sum(left) > 0  # uniquely named statements pile up until the server connection closes


async def test_statement_cache_size_cannot_go_in_the_url() -> None:
    """SQLAlchemy passes URL query values to asyncpg as strings and coerces only its own
    prepared_statement_cache_size, so `?statement_cache_size=0` breaks the connect: the setting has
    to be given in connect_args, by mediacache."""
    engine = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1:5432/postgres?statement_cache_size=0")
    try:
        with pytest.raises(TypeError, match="'<' not supported between instances of 'str' and 'int'"):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


def _db_upgrade_process(url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`mediacache db upgrade` as a new process (asyncpg's statement counter starts again at 1)."""
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "mediacache", "db", "upgrade"], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_alembic_through_pgbouncer(bouncer: PgBouncer, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Migrations run in one transaction on one connection, so PgBouncer's transaction mode suits
    them (env.py takes no session lock). What breaks them is the same prepared-statement clash:
    the second `mediacache db upgrade` process fails on its very first statement, because the first
    left __asyncpg_stmt_1__... on the server connection. With statement_cache_size=0 they run
    (down to base and up to head) through the same PgBouncer."""
    url = bouncer.url("postgresql")
    first = _db_upgrade_process(url, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    second = _db_upgrade_process(url, tmp_path)
    print(f"\nsecond `mediacache db upgrade` through PgBouncer: exit {second.returncode}\n{second.stderr.strip()}")
    assert second.returncode != 0
    assert 'prepared statement "__asyncpg_stmt_1__" already exists' in " ".join((second.stdout + second.stderr).split())

    def safe_engine(u: str, **_: Any) -> AsyncEngine:
        return create_async_engine(u, pool_size=1, connect_args=PGBOUNCER_SAFE)

    monkeypatch.setattr(mediacache.db.schema, "engine_for_migrations", safe_engine)
    settings = load_settings(database_url=url, data_dir=tmp_path / "data")
    try:
        command.downgrade(mediacache.db.schema.alembic_config(settings.sqlalchemy_url), "base")
        upgrade(settings)
    except DatabaseError as exc:  # pragma: no cover - the assertion below says what happened
        pytest.fail(f"migrations through PgBouncer failed with statement_cache_size=0: {exc}")

    async def revision() -> None:
        engine = safe_engine(settings.sqlalchemy_url)
        try:
            await check_migrated(engine, settings.database_display)
        finally:
            await engine.dispose()

    asyncio.run(revision())
    assert head_revision() is not None
