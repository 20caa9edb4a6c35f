"""One database transaction, with the driver's errors turned into DatabaseError naming the database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import InterfaceError as SAInterfaceError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mediacache.errors import DatabaseError, NotMigratedError

# PostgreSQL's SQLSTATE for a missing table (asyncpg's UndefinedTableError).
_UNDEFINED_TABLE = "42P01"


@asynccontextmanager
async def transaction(engine: AsyncEngine, display_url: str) -> AsyncIterator[AsyncConnection]:
    """`engine.begin()`; an unreachable database, a refused write or a failed query raise DatabaseError."""
    with database_errors(engine, display_url):
        async with engine.begin() as conn:
            yield conn


@contextmanager
def database_errors(engine: AsyncEngine, display_url: str) -> Iterator[None]:
    """SQLAlchemy's and the driver's errors inside the block as DatabaseError (NotMigratedError for
    a database without the tables)."""
    try:
        yield
    except DBAPIError as exc:
        if _is_missing_table(exc) or _is_missing_sqlite_file(exc, engine):
            # Typically a data directory other than the one migrated (it follows the current
            # directory unless MEDIACACHE_DATA_DIR pins it): say what to run, not what failed.
            raise not_migrated(display_url, exc) from exc
        raise _database_error(exc, display_url) from exc
    except (OSError, ConnectionError) as exc:
        raise DatabaseError(f"the database {display_url} did not answer: {short_error(exc)}") from exc
    except SQLAlchemyError as exc:
        raise DatabaseError(f"query on {display_url} failed: {short_error(exc)}") from exc


def not_migrated(display_url: str, exc: BaseException) -> NotMigratedError:
    """The error for a database without mediacache's tables: what to run, not what failed."""
    return NotMigratedError(
        f"the database {display_url} is not migrated ({short_error(exc)}): run `mediacache db upgrade` "
        "(or set MEDIACACHE_DATA_DIR / DATABASE_URL to the database you migrated)")


def _is_missing_table(exc: DBAPIError) -> bool:
    orig = exc.orig
    # SQLAlchemy's asyncpg adapter carries the SQLSTATE itself; asyncpg's own error is its cause.
    code = getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None)
    if code == _UNDEFINED_TABLE:
        return True
    return isinstance(exc, OperationalError) and "no such table" in str(orig)


def _is_missing_sqlite_file(exc: DBAPIError, engine: AsyncEngine) -> bool:
    # A SQLite file whose folder does not exist cannot even be opened: no database is there yet.
    database = engine.url.database
    return (engine.dialect.name == "sqlite" and isinstance(exc, OperationalError) and bool(database)
            and database != ":memory:" and not Path(str(database)).exists())


def _database_error(exc: DBAPIError, display_url: str) -> DatabaseError:
    if isinstance(exc, OperationalError | SAInterfaceError):
        return DatabaseError(f"the database {display_url} did not answer: {short_error(exc)}")
    # A connection that died under a statement (the server restarted) is not a bad query.
    if exc.connection_invalidated:
        return DatabaseError(f"the database {display_url} did not answer: {short_error(exc)}")
    if isinstance(exc, IntegrityError):
        return DatabaseError(f"{display_url} refused the write: {short_error(exc)}")
    return DatabaseError(f"query on {display_url} failed: {short_error(exc)}")


def short_error(exc: BaseException) -> str:
    """The first line of the driver's message, without SQLAlchemy's statement dump."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
