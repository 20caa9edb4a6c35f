"""Every query on webhook_outbox: claiming due deliveries under a lease, and recording how each went."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import BigInteger, Table, any_, bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine

from mediacache.db.access import DatabaseAccess
from mediacache.db.columns import UTCDateTime, utcnow
from mediacache.db.models import WebhookOutbox
from mediacache.events.payload import Event
from mediacache.records import WebhookStats

_o = cast(Table, WebhookOutbox.__table__)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One claimed outbox row: an event on its way to one receiver."""

    row_id: int
    event_id: uuid.UUID
    event_type: str
    asset_id: uuid.UUID
    target_url: str
    payload: str
    attempts: int
    created_at: datetime
    last_error: str | None = None
    dead: bool = False


def outbox_rows(event: Event, targets: Sequence[str]) -> list[dict[str, Any]]:
    """The outbox rows of `event`: one per webhook target, due at once (to insert with the change it reports)."""
    return [{"event_id": event.id, "event_type": event.type, "asset_id": event.asset_id, "target_url": url,
             "payload": event.body, "attempts": 0, "created_at": event.timestamp, "next_attempt_at": event.timestamp}
            for url in targets]


_RETURNED = (_o.c.id, _o.c.event_id, _o.c.event_type, _o.c.asset_id, _o.c.target_url, _o.c.payload, _o.c.attempts,
             _o.c.created_at)


def _claim_statement(dialect: str) -> Any:
    """Up to `b_limit` due rows leased to `b_token` until `b_until`, in one conditional UPDATE.

    Built once: a claim runs for every wake-up of every deliverer, so neither building nor
    compiling it should be part of that cost.
    """
    now = bindparam("b_now", type_=UTCDateTime())
    due = (select(_o.c.id)
           .where(_o.c.dead_at.is_(None), _o.c.next_attempt_at <= now,
                  (_o.c.claimed_until.is_(None)) | (_o.c.claimed_until < now))
           .order_by(_o.c.next_attempt_at).limit(bindparam("b_limit")))
    if dialect == "postgresql":
        due = due.with_for_update(skip_locked=True)
    return (update(_o).where(_o.c.id.in_(due.scalar_subquery()))
            .values(claim_token=bindparam("b_token"), claimed_until=bindparam("b_until", type_=UTCDateTime()))
            .returning(*_RETURNED))


class OutboxRepository:
    def __init__(self, engine: AsyncEngine, display_url: str = "the database") -> None:
        self._db = DatabaseAccess(engine, display_url)
        self._claim = _claim_statement(engine.dialect.name)
        if engine.dialect.name == "postgresql":
            # One array parameter: one statement text (and prepared statement) for any number of rows.
            ids: Any = _o.c.id == any_(bindparam("b_ids", type_=ARRAY(BigInteger())))
        else:
            ids = _o.c.id.in_(bindparam("b_ids", expanding=True))
        self._delete_delivered = delete(_o).where(ids, _o.c.claim_token == bindparam("b_token"))

    async def claim_due(self, token: str, lease_s: float, limit: int) -> list[Delivery]:
        """Takes up to `limit` due deliveries for `token` until the lease ends.

        One conditional UPDATE: on PostgreSQL its subquery skips rows another worker has locked
        (FOR UPDATE SKIP LOCKED), and SQLite runs writers one at a time, so no row goes to two
        workers while a lease lives. A worker that dies leaves a lease that runs out.
        """
        now = utcnow()
        params = {"b_now": now, "b_limit": limit, "b_token": token, "b_until": now + timedelta(seconds=lease_s)}
        async with self._db.tx(single_statement=True) as conn:
            rows = (await conn.execute(self._claim, params)).all()
        return sorted((Delivery(r.id, r.event_id, r.event_type, r.asset_id, r.target_url, r.payload, r.attempts,
                                r.created_at) for r in rows), key=lambda d: d.row_id)

    async def delivered(self, row_ids: Sequence[int], token: str) -> int:
        """The receivers took these rows' events: their work is done. One statement for any number,
        and only rows `token` still holds (a lease that ran out went to another worker, which
        records its own attempt). Returns how many were deleted."""
        if not row_ids:
            return 0
        async with self._db.tx(single_statement=True) as conn:
            result = await conn.execute(self._delete_delivered, {"b_ids": list(row_ids), "b_token": token})
        return int(result.rowcount or 0)

    async def retry_later(self, delivery: Delivery, token: str, *, at: datetime, error: str) -> None:
        stmt = (update(_o).where(_o.c.id == delivery.row_id, _o.c.claim_token == token)
                .values(attempts=_o.c.attempts + 1, next_attempt_at=at, claim_token=None, claimed_until=None,
                        last_error=error[:2000]))
        async with self._db.tx(single_statement=True) as conn:
            await conn.execute(stmt)

    async def dead(self, delivery: Delivery, token: str, *, error: str) -> None:
        now = utcnow()
        stmt = (update(_o).where(_o.c.id == delivery.row_id, _o.c.claim_token == token)
                .values(attempts=_o.c.attempts + 1, dead_at=now, claim_token=None, claimed_until=None,
                        last_error=error[:2000]))
        async with self._db.tx(single_statement=True) as conn:
            await conn.execute(stmt)

    async def counts(self) -> WebhookStats:
        """Pending and dead deliveries, in one query."""
        stmt = select(func.count().filter(_o.c.dead_at.is_(None)), func.count().filter(_o.c.dead_at.is_not(None)))
        async with self._db.tx(single_statement=True) as conn:
            pending, dead = (await conn.execute(stmt)).one()
        return WebhookStats(pending=int(pending), dead=int(dead))

    async def all_rows(self) -> list[Delivery]:
        """Every row, oldest first (for tests and the bench)."""
        stmt = select(_o.c.id, _o.c.event_id, _o.c.event_type, _o.c.asset_id, _o.c.target_url, _o.c.payload,
                      _o.c.attempts, _o.c.created_at, _o.c.last_error, _o.c.dead_at.is_not(None)).order_by(_o.c.id)
        async with self._db.tx(single_statement=True) as conn:
            rows = (await conn.execute(stmt)).all()
        return [Delivery(r.id, r.event_id, r.event_type, r.asset_id, r.target_url, r.payload, r.attempts,
                         r.created_at, r.last_error, dead=bool(r[9])) for r in rows]
