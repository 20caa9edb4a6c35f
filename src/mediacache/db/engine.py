"""The async engine (with SQLite's pragmas) and the session factory."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine


def create_engine(url: str, *, pool_size: int = 20, pgbouncer: bool = False) -> AsyncEngine:
    """At most `pool_size` connections (MEDIACACHE_DB_POOL_SIZE), opened as needed and then kept;
    `pgbouncer=True` (MEDIACACHE_DB_PGBOUNCER) when `url` points at PgBouncer in transaction or
    statement mode."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # No pool_pre_ping: with asyncpg it costs a transaction round trip on every checkout. A
    # connection that died (database restart) fails its statement, SQLAlchemy drops it from the
    # pool, and the caller's DatabaseError is retried like any other transient failure.
    # No overflow: SQLAlchemy closes an overflow connection as soon as it comes back, so a worker
    # whose statements outnumber the kept connections now and then opened and closed PostgreSQL
    # connections all day (bench/soak.py saw the count swing by 4). Keeping every connection it
    # opens costs idle connections, not more of them.
    return create_async_engine(url, pool_size=pool_size, max_overflow=0, pool_recycle=1800,
                               connect_args=pgbouncer_connect_args() if pgbouncer else {})


def pgbouncer_connect_args() -> dict[str, Any]:
    # Behind PgBouncer in transaction mode each transaction may run on another server connection,
    # where asyncpg's named prepared statements do not exist ("prepared statement __asyncpg_stmt_8__
    # does not exist") or are another process's ("already exists"). With no statement cache asyncpg
    # uses the unnamed statement, parsed in the same message batch as each execution, so none
    # outlives its transaction. It cannot go in DATABASE_URL: SQLAlchemy passes URL query values to
    # asyncpg as strings. tests/test_scale_pgbouncer.py fails if named statements come back.
    return {"statement_cache_size": 0}


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets readers (get_urls, stats) run while a worker writes; busy_timeout makes
    # concurrent writers wait for the lock instead of failing at once.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)
