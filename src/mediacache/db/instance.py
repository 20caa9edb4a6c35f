"""The database's identity: the one row of `mediacache_instance`, made at first use."""

from __future__ import annotations

import uuid
from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from mediacache.db.columns import utcnow
from mediacache.db.models import MediacacheInstance
from mediacache.db.transaction import transaction

_t = cast(Table, MediacacheInstance.__table__)


async def instance_id(engine: AsyncEngine, display_url: str) -> str:
    """This database's UUID. `db upgrade` writes it; where the row is gone (a table emptied by
    hand) a new one is made, and ON CONFLICT DO NOTHING makes two processes starting at once agree."""
    async with transaction(engine, display_url) as conn:
        found = (await conn.execute(select(_t.c.instance_id))).scalar_one_or_none()
        if found is not None:
            return str(found)
        insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
        await conn.execute(insert(_t).values(singleton=1, instance_id=str(uuid.uuid4()), created_at=utcnow())
                           .on_conflict_do_nothing(index_elements=["singleton"]))
        return str((await conn.execute(select(_t.c.instance_id))).scalar_one())
