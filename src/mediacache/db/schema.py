"""The schema's version: the check that the database is migrated, and `mediacache db upgrade`."""

from __future__ import annotations

import asyncio
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from mediacache.db.engine import create_engine
from mediacache.errors import DatabaseError, NotMigratedError
from mediacache.settings import Settings

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent.parent / "migrations"
# Alembic is imported only to migrate: its script machinery costs every worker and server
# process about 11 MiB of RSS, and checking the version needs only these two lines of each file.
_REVISION = re.compile(r'^revision(?:: str)? = "([^"]+)"$', re.M)
_DOWN_REVISION = re.compile(r'^down_revision(?:: str \| None)? = (?:"([^"]+)"|None)$', re.M)


def alembic_config(url: str | None = None, *, pgbouncer: bool = False) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        cfg.attributes["sqlalchemy_url"] = url
        cfg.attributes["pgbouncer"] = pgbouncer
    return cfg


@cache
def head_revision() -> str:
    """The newest revision in migrations/versions: the one no other revision names as its parent."""
    parents: dict[str, str | None] = {}
    for path in sorted((MIGRATIONS_DIR / "versions").glob("*.py")):
        if path.name.startswith("_"):
            continue
        source = path.read_text()
        revision, down = _REVISION.search(source), _DOWN_REVISION.search(source)
        if revision is None or down is None:
            raise RuntimeError(f"{path}: no `revision = \"...\"` and `down_revision = ...` lines")
        parents[revision.group(1)] = down.group(1)
    heads = set(parents) - set(parents.values())
    if len(heads) != 1:
        raise RuntimeError(f"{MIGRATIONS_DIR / 'versions'} has {len(heads)} heads ({sorted(heads)}); it needs one")
    return heads.pop()


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Brings the database of `settings` to `revision`, creating the SQLite file's folder first."""
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        Path(url.split(":///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    from alembic import command

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
            current = await conn.run_sync(_current_revision)
    except (SQLAlchemyError, OSError) as exc:
        raise DatabaseError(f"cannot reach the database {display_url}: {exc}") from exc
    head = head_revision()
    if current != head:
        state = "has no mediacache tables" if current is None else f"is at revision {current}"
        raise NotMigratedError(
            f"the database {display_url} {state}, but this version of mediacache needs revision {head}: "
            "run `mediacache db upgrade` first")


def _current_revision(conn: Any) -> str | None:
    """The revision alembic_version records, or None when the table is not there or empty."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one_or_none()
