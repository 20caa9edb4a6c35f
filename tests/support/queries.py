"""Counting the SQL statements a MediaCache sends (the one-query promises of resolution and reads)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event

from mediacache.service import MediaCache

# BEGIN, COMMIT and the like: SQLAlchemy's events never report them, so neither does the count.
_TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "START", "END", "SET ")
# asyncpg's look-up of a type it meets for the first time on a connection (with JIT switched off
# around it): once per connection and type, and not reported by SQLAlchemy's events either.
_INTROSPECTION = ("typeinfo_tree", "set_config('jit'", "current_setting('jit')")


def _ours(query: str) -> bool:
    return not query.lstrip().upper().startswith(_TRANSACTION_CONTROL) and not any(
        marker in query for marker in _INTROSPECTION)


@asynccontextmanager
async def count_queries(cache: MediaCache) -> AsyncIterator[list[str]]:
    """The SQL statements `cache` sends while the block runs: those SQLAlchemy executes, and on
    PostgreSQL those sent through asyncpg directly (db/driver.py), which SQLAlchemy never sees."""
    statements: list[str] = []

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    def on_driver_query(record: Any) -> None:
        if _ours(record.query):
            statements.append(record.query)

    def on_checkout(dbapi_connection: Any, *args: Any) -> None:
        # asyncpg logs the statements it sends itself (fetch, execute); SQLAlchemy runs its own
        # through prepared statements, which asyncpg does not log, so nothing counts twice.
        driver = getattr(dbapi_connection, "driver_connection", None)
        if hasattr(driver, "add_query_logger"):
            driver.add_query_logger(on_driver_query)
            watched.append(driver)

    watched: list[Any] = []
    engine = cache.backends.engine.sync_engine
    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(engine.pool, "checkout", on_checkout)
    try:
        yield statements
        # asyncpg hands each logged statement to its loggers with call_soon: let them run.
        await asyncio.sleep(0)
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
        event.remove(engine.pool, "checkout", on_checkout)
        for driver in watched:
            driver.remove_query_logger(on_driver_query)
