"""Migration 0002 on fresh SQLite and PostgreSQL: up from 0001 keeping data, matching the models, and down."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import mediacache.apptables.models  # noqa: F401  (the application tables on Base.metadata)
from mediacache.db.engine import create_engine
from mediacache.db.models import Base, CacheAsset
from mediacache.db.schema import alembic_config
from mediacache.settings import load_settings
from tests.support.processes import cli

APP_TABLES = {"carousels", "carousel_images", "carousel_slides", "tiktok_profiles", "tiktok_posts",
              "tiktok_post_images"}


def _inspect(url: str) -> dict[str, Any]:
    """Tables, revision, cache_assets rows, and the differences between the models and the schema."""
    async def main() -> dict[str, Any]:
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.connect() as conn:
                def read(sync: sa.Connection) -> dict[str, Any]:
                    # Only the tables of 0002: later revisions may change the others.
                    ctx = MigrationContext.configure(sync, opts={"include_object": lambda _obj, name, type_, *_: (
                        type_ != "table" or name in APP_TABLES)})
                    tables = set(sa.inspect(sync).get_table_names())
                    rows = sync.execute(sa.text("SELECT original_url FROM cache_assets")).scalars().all()
                    diffs = compare_metadata(ctx, Base.metadata) if APP_TABLES <= tables else None
                    return {"tables": tables, "revision": ctx.get_current_revision(), "urls": rows,
                            "diffs": diffs}
                return await conn.run_sync(read)
        finally:
            await engine.dispose()
    return asyncio.run(main())


def _insert_asset(url: str) -> None:
    async def main() -> None:
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.begin() as conn:
                now = datetime.now(UTC)
                # The columns 0001 has: later revisions add more, which the model would also write.
                table = sa.table("cache_assets", *(sa.column(name, CacheAsset.__table__.c[name].type) for name in (
                    "id", "original_url", "status", "attempts", "created_at", "updated_at")))
                await conn.execute(sa.insert(table).values(
                    id=uuid.uuid4(), original_url="https://example.com/kept.jpg", status="PENDING", attempts=0,
                    created_at=now, updated_at=now))
        finally:
            await engine.dispose()
    asyncio.run(main())


def test_db_upgrade_goes_from_0001_to_0002_and_downgrade_goes_back(
        fresh_db_url: str, tmp_path: Path, queue_prefix: str) -> None:
    settings = load_settings(database_url=fresh_db_url, data_dir=tmp_path / "d", queue_prefix=queue_prefix)
    url = settings.sqlalchemy_url
    first = cli(settings, "db", "upgrade", "0001")
    assert first.returncode == 0, first.stderr
    state = _inspect(url)
    assert state["revision"] == "0001" and not (APP_TABLES & state["tables"])
    _insert_asset(url)

    second = cli(settings, "db", "upgrade", "0002")
    assert second.returncode == 0, second.stderr
    state = _inspect(url)
    assert state["revision"] == "0002" and APP_TABLES <= state["tables"]
    assert state["urls"] == ["https://example.com/kept.jpg"]
    assert state["diffs"] == []  # the migration builds exactly what the models describe

    command.downgrade(alembic_config(url), "0001")
    state = _inspect(url)
    assert state["revision"] == "0001" and not (APP_TABLES & state["tables"])
    assert state["urls"] == ["https://example.com/kept.jpg"]

    again = cli(settings, "db", "upgrade")
    assert again.returncode == 0, again.stderr
    assert APP_TABLES <= _inspect(url)["tables"]
