"""The download's statements through asyncpg directly: the same answers, our errors, no dead connection reused."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Uuid, bindparam, literal, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from mediacache.db.driver import DriverStatement, fetch_row
from mediacache.db.engine import create_engine
from mediacache.errors import DatabaseError


@pytest.fixture
async def engine(pg_database: str) -> AsyncIterator[AsyncEngine]:
    made = create_engine(pg_database.replace("postgresql://", "postgresql+asyncpg://"), pool_size=1)
    yield made.execution_options(isolation_level="AUTOCOMMIT")
    await made.dispose()


async def _backend_pid(engine: AsyncEngine) -> int:
    row = await fetch_row(engine, "the test database", DriverStatement.of(text("SELECT pg_backend_pid() AS pid"),
                                                                            engine.dialect), {})
    assert row is not None
    return int(row["pid"])


def test_parameters_go_in_the_compiled_order_with_the_statements_own_values() -> None:
    engine = create_engine("postgresql+asyncpg://nobody@127.0.0.1/none")
    stmt: Any = select(bindparam("b_second", type_=None) + literal(7), bindparam("b_first"))
    compiled = DriverStatement.of(stmt, engine.dialect)
    assert compiled.sql.count("$") == 3
    assert compiled.arguments({"b_first": "f", "b_second": 2}) == [2, 7, "f"]


async def test_rows_come_back_by_column_name(engine: AsyncEngine) -> None:
    columns = select(bindparam("b_id", type_=Uuid()).label("id"), literal("x").label("fixed"))
    stmt = DriverStatement.of(columns, engine.dialect)
    asset_id = uuid.uuid4()
    row = await fetch_row(engine, "the test database", stmt, {"b_id": asset_id})
    assert row is not None and row["id"] == asset_id and row["fixed"] == "x"


async def test_a_failing_statement_is_our_error_and_the_connection_stays_usable(engine: AsyncEngine) -> None:
    pid = await _backend_pid(engine)
    bad = DriverStatement.of(text("SELECT 1 / (:b_zero)::int AS x"), engine.dialect)
    with pytest.raises(DatabaseError, match="query on the test database failed: division by zero"):
        await fetch_row(engine, "the test database", bad, {"b_zero": 0})
    assert await _backend_pid(engine) == pid


async def test_a_connection_the_server_ended_is_not_handed_out_again(engine: AsyncEngine, pg_database: str) -> None:
    pid = await _backend_pid(engine)
    admin = await asyncpg.connect(pg_database)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()
    with pytest.raises(DatabaseError, match="the test database did not answer"):
        await _backend_pid(engine)
    # The pool of one gave up the dead connection: the next statement gets a new session.
    assert await _backend_pid(engine) != pid
