"""One database transaction, with the driver's errors turned into DatabaseError naming the database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import InterfaceError as SAInterfaceError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mediacache.errors import DatabaseError


@asynccontextmanager
async def transaction(engine: AsyncEngine, display_url: str) -> AsyncIterator[AsyncConnection]:
    """`engine.begin()`; an unreachable database, a refused write or a failed query raise DatabaseError."""
    try:
        async with engine.begin() as conn:
            yield conn
    except (OperationalError, SAInterfaceError, OSError, ConnectionError) as exc:
        raise DatabaseError(f"the database {display_url} did not answer: {short_error(exc)}") from exc
    except DBAPIError as exc:
        # A connection that died under a statement (the server restarted) is not a bad query.
        if exc.connection_invalidated:
            raise DatabaseError(f"the database {display_url} did not answer: {short_error(exc)}") from exc
        if isinstance(exc, IntegrityError):
            raise DatabaseError(f"{display_url} refused the write: {short_error(exc)}") from exc
        raise DatabaseError(f"query on {display_url} failed: {short_error(exc)}") from exc
    except SQLAlchemyError as exc:
        raise DatabaseError(f"query on {display_url} failed: {short_error(exc)}") from exc


def short_error(exc: BaseException) -> str:
    """The first line of the driver's message, without SQLAlchemy's statement dump."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
