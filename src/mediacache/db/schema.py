"""The schema's version: the check that the database is migrated, and `mediacache db upgrade`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from mediacache.db.engine import create_engine
from mediacache.errors import DatabaseError, NotMigratedError
from mediacache.settings import Settings

MIGRATIONS_DIR = Path(__file__).parent.parent / "migrations"


def alembic_config(url: str | None = None, *, pgbouncer: bool = False) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        cfg.attributes["sqlalchemy_url"] = url
        cfg.attributes["pgbouncer"] = pgbouncer
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Brings the database of `settings` to `revision`, creating the SQLite file's folder first."""
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        Path(url.split(":///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    cfg = alembic_config(url, pgbouncer=settings.db_pgbouncer)
    try:
        command.upgrade(cfg, revision)
    except Exception as exc:
        if isinstance(exc, DatabaseError):
            raise
        raise DatabaseError(f"migrating {settings.database_display} failed: {exc}") from exc


async def upgrade_async(settings: Settings, revision: str = "head") -> None:
    # Alembic's env.py runs its own event loop, so it must run outside ours.
    await asyncio.to_thread(upgrade, settings, revision)


def engine_for_migrations(url: str, *, pgbouncer: bool = False) -> AsyncEngine:
    # A migration is one transaction on one connection and takes no session lock, so it runs
    # through PgBouncer in transaction mode too; should an upgrade lock ever be added, it must be
    # pg_advisory_xact_lock (session locks do not hold in transaction mode).
    return create_engine(url, pool_size=1, pgbouncer=pgbouncer)


async def check_migrated(engine: AsyncEngine, display_url: str) -> None:
    """Raises NotMigratedError unless the database is at the newest Alembic revision."""
    try:
        async with engine.connect() as conn:
            current = await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
    except (SQLAlchemyError, OSError) as exc:
        raise DatabaseError(f"cannot reach the database {display_url}: {exc}") from exc
    head = head_revision()
    if current != head:
        state = "has no mediacache tables" if current is None else f"is at revision {current}"
        raise NotMigratedError(
            f"the database {display_url} {state}, but this version of mediacache needs revision {head}: "
            "run `mediacache db upgrade` first")
