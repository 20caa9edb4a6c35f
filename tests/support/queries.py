"""Counting the SQL statements a MediaCache sends (the one-query promises of resolution and reads)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from mediacache.service import MediaCache


@contextmanager
def count_queries(cache: MediaCache) -> Iterator[list[str]]:
    """The SQL statements `cache` sends while the block runs."""
    statements: list[str] = []

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = cache.backends.engine.sync_engine
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
