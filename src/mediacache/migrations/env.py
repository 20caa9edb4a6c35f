"""Alembic environment: runs migrations on the async engine of DATABASE_URL."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

import mediacache.apptables.models  # noqa: F401  (registers the application tables on Base.metadata)
from mediacache.db.models import Base
from mediacache.db.schema import engine_for_migrations

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("sqlalchemy_url")
    if url is None:
        from mediacache.settings import load_settings

        url = load_settings().sqlalchemy_url
    return str(url)


def _pgbouncer() -> bool:
    if "pgbouncer" in config.attributes:
        return bool(config.attributes["pgbouncer"])
    # Run by the plain `alembic` command: the environment says.
    from mediacache.settings import load_settings

    return load_settings().db_pgbouncer


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = engine_for_migrations(_url(), pgbouncer=_pgbouncer())
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
