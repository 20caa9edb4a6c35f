"""One database as the query classes use it: its engine, an autocommit twin and the name errors show."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mediacache.db.transaction import transaction


class DatabaseAccess:
    """Transactions on one engine; shared by the query classes of one repository."""

    def __init__(self, engine: AsyncEngine, display_url: str) -> None:
        self.engine = engine
        self.display_url = display_url
        self.dialect = engine.dialect.name
        # A single statement is atomic on its own: without BEGIN and COMMIT it costs one round
        # trip instead of three, which is most of the database time of a small download.
        self.autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    def tx(self, *, single_statement: bool = False) -> AbstractAsyncContextManager[AsyncConnection]:
        """A transaction (or, for one statement, autocommit); driver errors become DatabaseError."""
        return transaction(self.autocommit if single_statement else self.engine, self.display_url)
