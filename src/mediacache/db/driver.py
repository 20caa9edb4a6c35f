"""The statements every download runs, sent through asyncpg itself on a connection of the engine's pool.

A statement through SQLAlchemy costs about 250 µs of CPU here, the same one through asyncpg on a
connection checked out of the same pool about 150 µs (bench/bench_driver.py), and a download runs
three of them. The statements are still SQLAlchemy Core, compiled once for PostgreSQL: the SQL
has one source, the pool, its limits and PgBouncer's connect arguments stay the engine's, and
only the execution skips SQLAlchemy's per-call work (cache key, parameter and result
processing, the greenlet hop). Parameters must be what asyncpg takes as they are (UUIDs, text,
numbers, aware datetimes, lists), since no bind processor runs.

URL resolution goes the same way: its one query returns up to thousands of rows, and there
SQLAlchemy's per-row result processing is most of the client's time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from mediacache.db.transaction import database_errors, not_migrated, short_error
from mediacache.errors import DatabaseError


@dataclass(frozen=True, slots=True)
class DriverStatement:
    """A Core statement compiled for asyncpg: its SQL, the order of its parameters, and the values
    the statement itself carries (literals SQLAlchemy sends as parameters)."""

    sql: str
    names: tuple[str, ...]
    fixed: Mapping[str, Any]

    @classmethod
    def of(cls, statement: Any, dialect: Dialect) -> DriverStatement:
        compiled = statement.compile(dialect=dialect)
        return cls(compiled.string, tuple(compiled.positiontup or ()), dict(compiled.params))

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[name] if name in params else self.fixed[name] for name in self.names]


async def fetch_row(engine: AsyncEngine, display_url: str, statement: DriverStatement,
                    params: Mapping[str, Any]) -> asyncpg.Record | None:
    """Runs `statement` on its own (the engine should be in autocommit) and returns its first row."""
    async with _driver(engine, display_url) as driver:
        return await driver.fetchrow(statement.sql, *statement.arguments(params))


async def fetch_rows(engine: AsyncEngine, display_url: str, statement: DriverStatement,
                     params: Mapping[str, Any]) -> list[asyncpg.Record]:
    """Runs `statement` on its own (the engine should be in autocommit) and returns all its rows."""
    async with _driver(engine, display_url) as driver:
        return await driver.fetch(statement.sql, *statement.arguments(params))


@asynccontextmanager
async def _driver(engine: AsyncEngine, display_url: str) -> AsyncIterator[asyncpg.Connection]:
    """The asyncpg connection under a connection checked out of `engine`'s pool.

    A raw checkout, without SQLAlchemy's Connection and its BEGIN (the engine is in autocommit
    anyway): that wrapping was about a tenth of a download's CPU. Errors become DatabaseError as
    in `transaction`; a connection that failed under the statement is invalidated, so the pool
    does not hand it out again.
    """
    with database_errors(engine, display_url):
        pooled = await engine.raw_connection()
    driver: asyncpg.Connection = pooled.driver_connection
    try:
        yield driver
    except asyncpg.UndefinedTableError as exc:
        raise not_migrated(display_url, exc) from exc
    except asyncpg.PostgresError as exc:
        if driver.is_closed():  # the server ended the session (a restart, an admin's kill)
            await greenlet_spawn(pooled.invalidate, exc)
            raise DatabaseError(f"the database {display_url} did not answer: {short_error(exc)}") from exc
        raise DatabaseError(f"query on {display_url} failed: {short_error(exc)}") from exc
    except (asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, ConnectionError) as exc:
        # InternalClientError: the server's goodbye to an idle connection (a restart, an admin's
        # kill) arrived while it sat in the pool, and the protocol is in no state to send.
        await greenlet_spawn(pooled.invalidate, exc)
        raise DatabaseError(f"the database {display_url} did not answer: {short_error(exc)}") from exc
    finally:
        # Back to the pool (after an invalidate, to be replaced); its reset runs in SQLAlchemy's
        # async bridge like any of the pool's own calls.
        await greenlet_spawn(pooled.close)
