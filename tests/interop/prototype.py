"""Proposed helpers for three Node BullMQ interop bugs, prototyped outside src/ (see docs/interop-notes.md).

1. `delivery_of(job)`: tells a re-run of a finished job (bull-board "Retry", Node `job.retry()`,
   `queue.retryJobs`) from a re-delivery of an attempt whose outcome the database already holds.
2. `make_worker_visible_to_node(worker)`: names the Python worker's blocking connection the way Node
   BullMQ's `queue.getWorkers()` (and so bull-board) looks for it.
   `use_short_stacktraces(job)`: failure entries that start with the reason, then a few frames.
3. `claim_queue_owner(...)`: a queue remembers which database its jobs belong to, and a process on
   another database refuses to start.

Everything here depends only on `bullmq` 3.4.4, redis-py and SQLAlchemy, so it can move into
`mediacache` as it is; the tests in this folder drive it against real Node and Python BullMQ.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import sys
import traceback
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

# ---- 1. a re-run of a finished job ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobDelivery:
    """What the handler needs to know about how a job reached the worker, free of BullMQ types.

    `rerun_of_finished`: the job had finished (failed or completed) and was moved back to wait by
    Node `job.retry()` / bull-board's Retry (reprocessJob.lua) or `queue.retryJobs`
    (moveJobsToWait.lua). Both delete `failedReason`, `finishedOn` and `processedOn` from the job
    hash and keep `atm` (attemptsMade), `ats` (attemptsStarted) and `stacktrace`. In every other
    path that counts a failed attempt (retryJob.lua, moveToDelayed.lua, moveToFinished.lua) the same
    script writes `failedReason`, so "attempts made or traces recorded, but no failedReason" is
    only ever a finished job that was sent back.
    `created_at_ms`: the job's `timestamp` (the producer's clock when it added the job).
    """

    rerun_of_finished: bool
    created_at_ms: int
    attempts_made: int
    attempts_started: int
    stalled_count: int

    def asks_retry_of_failed(self, failed_at_ms: int) -> bool:
        """Whether this delivery asks for another download of an asset that FAILED at `failed_at_ms`.

        Yes for a re-run of a finished job, and for a job added after the asset failed (a Node
        producer adding the asset's job again once the old one was removed). No for everything
        else: a stalled attempt delivered again after its worker died between writing FAILED and
        telling Redis (atm stays 0 on a first attempt, so "attemptsMade == 0" alone cannot tell
        it from a new job), or a second job for the same asset that was already waiting when the
        asset failed (its request has had its answer).
        """
        return self.rerun_of_finished or self.created_at_ms > failed_at_ms


def delivery_of(job: Any) -> JobDelivery:
    """Reads a `bullmq.Job` as handed to the processor (fields as Job.fromJSON sets them)."""
    attempts_made = int(job.attemptsMade or 0)
    return JobDelivery(
        rerun_of_finished=not job.failedReason and (attempts_made > 0 or bool(job.stacktrace)),
        created_at_ms=int(job.timestamp or 0),
        attempts_made=attempts_made,
        attempts_started=int(getattr(job, "attemptsStarted", 0) or 0),
        stalled_count=int(getattr(job, "stalledCounter", 0) or 0),
    )


# ---- 2a. worker names that Node's getWorkers() finds --------------------------------------------


def node_worker_client_name(prefix: str, queue_name: str, worker_name: str | None) -> str:
    """The client name Node BullMQ gives a worker's blocking connection (utils/create-backend.js)
    and that `queue.getWorkers()` matches (queue-getters.js): `<prefix>:<base64(queue)>[:w:<name>]`.
    Python bullmq 3.4.4 uses `<prefix>:<queue>[:w:<name>]` instead, which Node never matches."""
    encoded = base64.b64encode(queue_name.encode()).decode()
    return f"{prefix}:{encoded}" + (f":w:{worker_name}" if worker_name else "")


async def _rename_connection(redis_connection: Any, name: str) -> None:
    """CLIENT SETNAME on a bullmq RedisConnection, kept over reconnects.

    bullmq's own `set_client_name` updates the pool's connection_kwargs and sends CLIENT SETNAME,
    but the worker's clients are single-connection clients: their one Connection object was made
    before, keeps its own `client_name`, and sends that again whenever it reconnects. Without the
    third assignment a Redis restart would turn the worker invisible to Node again.
    """
    await redis_connection.set_client_name(name)
    client = redis_connection.conn
    single = getattr(client, "connection", None)
    if single is not None:
        single.client_name = name


async def make_worker_visible_to_node(worker: Any) -> str:
    """Names `worker`'s blocking connection as Node BullMQ does, before `worker.run()`.

    The main connection keeps Python bullmq's name, so Python's `Queue.get_workers()` still finds
    the worker, and Node's `getWorkers()` lists it once, as it lists a Node worker (Node names only
    the blocking connection). Call after constructing the Worker with `autorun: False` and before
    `run()`: run() then sees the names set and leaves them.
    """
    await worker._ensure_client_names()  # bullmq's names first; sets the flag run() checks
    name = node_worker_client_name(worker.prefix, worker.name, worker.workerName)
    if worker.blockingRedisConnection is not None:
        await _rename_connection(worker.blockingRedisConnection, name)
    return name


# ---- 2b. failure traces that start with the reason ----------------------------------------------

MAX_TRACE_CHARS = 2000


def _frame_line(frame: traceback.FrameSummary) -> str:
    path = Path(frame.filename)
    # site-packages/<pkg>/x.py or src/<pkg>/x.py: the package-relative part is what a reader needs.
    parts = path.parts
    for anchor in ("site-packages", "src"):
        if anchor in parts:
            path = Path(*parts[len(parts) - parts[::-1].index(anchor):])
            break
    else:
        path = Path(path.name)
    return f"    at {frame.name} ({path}:{frame.lineno})"


def _chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        chain.append(current)
        seen.add(id(current))
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return chain


def _describe(exc: BaseException) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _call_stack(chain: list[BaseException]) -> list[traceback.FrameSummary]:
    """The stack where the root cause was raised, outermost call first, pieced together from the
    chain: each exception's traceback runs from where it was caught down to where it was raised, so
    the next (inner) exception's first frame replaces the re-raise line of the same function."""
    frames: list[traceback.FrameSummary] = []
    for exc in chain:
        for frame in traceback.extract_tb(exc.__traceback__):
            if frames and (frames[-1].filename, frames[-1].name) == (frame.filename, frame.name):
                frames[-1] = frame
            else:
                frames.append(frame)
    return frames


def short_failure_trace(exc: BaseException, max_frames: int = 4) -> str:
    """A Node-like entry: `Type: reason`, the innermost `max_frames` frames of the stack where the
    root cause was raised (innermost first, as in a JS stack), then one `caused by` line per cause
    whose message adds something."""
    chain = _chain(exc)
    root = chain[-1]
    frames = _call_stack(chain)[-max_frames:] if max_frames > 0 else []
    lines = [_describe(exc)]
    lines += [_frame_line(f) for f in reversed(frames)]
    messages = {str(exc)}
    for cause in chain[1:]:
        if str(cause) not in messages or cause is root:
            lines.append(f"  caused by {_describe(cause)}")
            messages.add(str(cause))
    entry = "\n".join(lines)
    return entry if len(entry) <= MAX_TRACE_CHARS else entry[: MAX_TRACE_CHARS - 3] + "..."


def use_short_stacktraces(job: Any, max_frames: int = 4) -> None:
    """Makes this job's failures record `short_failure_trace` entries instead of Python tracebacks.

    Python bullmq writes `stacktrace` in Job.moveToFailed: it calls `self.updateStacktrace()`, which
    appends `traceback.format_exc()` (the whole chain, reason last) and then applies the job option
    `stackTraceLimit` (how many entries to keep, 0 for none, as in Node; it does not shorten an
    entry). The override below keeps that rule and changes only what one entry is; set on the
    instance, it touches no other job and no bullmq code. Call it first thing in the processor.
    """

    def update_stacktrace() -> None:
        exc = sys.exc_info()[1]  # moveToFailed runs inside the worker's `except Exception as err`
        if exc is None:
            return
        job.stacktrace.append(short_failure_trace(exc, max_frames))
        limit = job.opts.get("stackTraceLimit")
        if limit == 0:
            job.stacktrace = []
        elif limit:
            job.stacktrace = job.stacktrace[-limit:]

    job.updateStacktrace = update_stacktrace


# ---- 3. the queue knows its database ------------------------------------------------------------


def owner_key(prefix: str, queue_name: str) -> str:
    # In the queue's key space, beside the reconcile lock (queue.try_lock). BullMQ's obliterate
    # deletes only the keys it knows (obliterate.lua), so this one outlives an obliterate: the
    # binding ends only where someone means it to (`mediacache queue release`, proposed).
    return f"{prefix}:{queue_name}:mediacache:owner"


def database_display_url(url: str) -> str:
    """The database URL without its password, spelled one way: the driver dropped, `postgres://`
    read as postgresql, a SQLite path made absolute (`./x.db` from two directories is two files)."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
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


_INSTANCE_DDL = (
    "CREATE TABLE IF NOT EXISTS mediacache_instance ("
    " singleton INTEGER PRIMARY KEY CHECK (singleton = 1),"
    " instance_id VARCHAR(36) NOT NULL,"
    " created_at VARCHAR(40) NOT NULL)"
)


async def ensure_instance_id(engine: AsyncEngine) -> str:
    """The database's own id, made at first use. In the project this table comes from an Alembic
    migration; the one-row table and `INSERT .. ON CONFLICT DO NOTHING` make two first starts agree."""
    async with engine.begin() as conn:
        await conn.execute(text(_INSTANCE_DDL))
        await conn.execute(
            text("INSERT INTO mediacache_instance (singleton, instance_id, created_at) VALUES (1, :id, :at)"
                 " ON CONFLICT (singleton) DO NOTHING"),
            {"id": str(uuid.uuid4()), "at": datetime.now(UTC).isoformat()})
        return str((await conn.execute(text("SELECT instance_id FROM mediacache_instance"))).scalar_one())


@dataclass(frozen=True, slots=True)
class DatabaseIdentity:
    instance_id: str  # the identity: two databases never share it (a restored copy does: see the notes)
    display: str  # for messages only: the same database is reachable under several URLs

    @property
    def url_sha256(self) -> str:
        return hashlib.sha256(self.display.encode()).hexdigest()


async def database_identity(engine: AsyncEngine, url: str) -> DatabaseIdentity:
    return DatabaseIdentity(await ensure_instance_id(engine), database_display_url(url))


class QueueOwnerMismatchError(Exception):
    """In the project: a MediaCacheError subclass (a configuration error, exit code 2)."""


def _owner_record(identity: DatabaseIdentity, role: str) -> str:
    return json.dumps({
        "instanceId": identity.instance_id, "database": identity.display, "databaseSha256": identity.url_sha256,
        "claimedAt": datetime.now(UTC).isoformat(timespec="seconds"),
        "claimedBy": f"{role}@{socket.gethostname()}:{os.getpid()}",
    })


async def claim_queue_owner(redis: Any, *, prefix: str, queue_name: str, identity: DatabaseIdentity,
                            redis_display: str, redis_db: int, role: str = "worker") -> str:
    """Binds the queue to `identity`'s database at first use; refuses one bound to another database.

    Returns "claimed" (first use), "same" (bound to this database) or "moved" (this database,
    now under another URL: the record is updated). Raises QueueOwnerMismatchError naming both
    databases and the two settings that give each deployment its own queue.
    """
    key = owner_key(prefix, queue_name)
    mine = _owner_record(identity, role)
    for _ in range(3):  # the key may vanish between SET NX and GET (an obliterate): try again
        if await redis.set(key, mine, nx=True):
            return "claimed"
        raw = await redis.get(key)
        if raw is None:
            continue
        stored = json.loads(raw)
        if stored.get("instanceId") == identity.instance_id:
            if stored.get("databaseSha256") != identity.url_sha256:
                await redis.set(key, mine, xx=True)
                return "moved"
            return "same"
        raise QueueOwnerMismatchError(
            f"the queue {queue_name!r} on Redis {redis_display} (key prefix {prefix!r}) belongs to the database "
            f"{stored.get('database')} (instance {stored.get('instanceId')}, bound {stored.get('claimedAt')} by "
            f"{stored.get('claimedBy')}), but this {role} uses the database {identity.display} (instance "
            f"{identity.instance_id}); its jobs name assets that this database does not have. Give each "
            f"deployment its own queue: set MEDIACACHE_QUEUE_PREFIX (now {prefix!r}) or REDIS_DB (now {redis_db}) "
            f"to a different value for one of them. Moved to a new, empty database on purpose? Empty the "
            f"old queue first (`mediacache queue release`, which obliterates it and deletes {key})")
    raise QueueOwnerMismatchError(f"could not read or set {key} on Redis {redis_display}: it keeps disappearing")
