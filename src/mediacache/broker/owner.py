"""Which database a queue belongs to: a record next to the queue in Redis, checked by producers and workers."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.engine import URL, make_url

from mediacache.errors import QueueOwnerMismatchError

Role = Literal["producer", "worker"]
Binding = Literal["claimed", "same", "moved"]


def owner_key(prefix: str, queue_name: str) -> str:
    # In the queue's key space, beside the reconcile lock. BullMQ's obliterate deletes only the
    # keys it knows, so the binding outlives it: it ends only where someone deletes this key.
    return f"{prefix}:{queue_name}:mediacache:owner"


def database_display_url(url: str) -> str:
    """The database URL without its password, spelled one way: the driver dropped, `postgres://`
    read as postgresql, a SQLite path made absolute (`./x.db` from two directories is two files)."""
    parsed = make_url("postgresql://" + url.removeprefix("postgres://") if url.startswith("postgres://") else url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            database = str(Path(database).resolve())
        return f"sqlite:///{database}"
    # URL.set() reads password=None as "unchanged": build the URL again without it.
    bare = URL.create(backend, username=parsed.username, host=parsed.host, port=parsed.port,
                      database=parsed.database, query=parsed.query)
    return bare.render_as_string(hide_password=False)


@dataclass(frozen=True, slots=True)
class DatabaseIdentity:
    # The identity: two databases never share it (a copy restored from a dump does). The URL cannot
    # be it: one URL names two databases from two hosts, and one database has several URLs.
    instance_id: str
    display: str  # for messages, and to notice a database that moved

    @property
    def display_sha256(self) -> str:
        return hashlib.sha256(self.display.encode()).hexdigest()


def _record(identity: DatabaseIdentity, role: Role) -> str:
    return json.dumps({
        "instanceId": identity.instance_id, "database": identity.display, "databaseSha256": identity.display_sha256,
        "claimedAt": datetime.now(UTC).isoformat(timespec="seconds"),
        "claimedBy": f"{role}@{socket.gethostname()}:{os.getpid()}",
    })


async def claim_queue_owner(redis: Any, *, prefix: str, queue_name: str, identity: DatabaseIdentity,
                            redis_display: str, redis_db: int, role: Role) -> Binding:
    """Binds the queue to `identity`'s database at first use; refuses one bound to another database.

    Returns "claimed" (first use), "same" (bound to this database) or "moved" (this database under
    another URL: the record is updated). Raises QueueOwnerMismatchError naming both databases and
    the two settings that give each deployment its own queue.
    """
    key = owner_key(prefix, queue_name)
    mine = _record(identity, role)
    for _ in range(3):  # the key may vanish between SET NX and GET (deleted by hand): try again
        if await redis.set(key, mine, nx=True):
            return "claimed"
        raw = await redis.get(key)
        if raw is None:
            continue
        stored = json.loads(raw)
        if stored.get("instanceId") == identity.instance_id:
            if stored.get("databaseSha256") != identity.display_sha256:
                await redis.set(key, mine, xx=True)
                return "moved"
            return "same"
        raise QueueOwnerMismatchError(
            f"the queue {queue_name!r} on Redis {redis_display} (key prefix {prefix!r}) belongs to the database "
            f"{stored.get('database')} (instance {stored.get('instanceId')}, bound {stored.get('claimedAt')} by "
            f"{stored.get('claimedBy')}), but this {role} uses the database {identity.display} (instance "
            f"{identity.instance_id}); its jobs name assets that this database does not have. Give each "
            f"deployment its own queue: set MEDIACACHE_QUEUE_PREFIX (now {prefix!r}) or REDIS_DB (now {redis_db}) "
            f"to a different value for one of them. Moved to a new, empty database on purpose? Delete the key "
            f"{key} on that Redis once the old queue is empty")
    raise QueueOwnerMismatchError(f"could not read or set {key} on Redis {redis_display}: it keeps disappearing")
