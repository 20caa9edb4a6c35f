"""Names the worker's blocking connection as Node BullMQ does, so Node's `getWorkers()` (and bull-board) list it."""

from __future__ import annotations

import base64
from typing import Any


def node_worker_client_name(prefix: str, queue_name: str, worker_name: str | None) -> str:
    """The client name Node BullMQ gives a worker's blocking connection and that its
    `queue.getWorkers()` matches: `<prefix>:<base64(queue)>[:w:<name>]`. Python bullmq 3.4.4 uses
    `<prefix>:<queue>[:w:<name>]`, which Node never matches (tests/test_node_interop.py pins both)."""
    encoded = base64.b64encode(queue_name.encode()).decode()
    return f"{prefix}:{encoded}" + (f":w:{worker_name}" if worker_name else "")


async def _rename_connection(redis_connection: Any, name: str) -> None:
    """CLIENT SETNAME on a bullmq RedisConnection, kept over reconnects.

    bullmq's `set_client_name` updates the pool's connection arguments and sends CLIENT SETNAME,
    but the worker's clients are single-connection clients: their one Connection object was made
    before and sends its own `client_name` again whenever it reconnects. Without the last
    assignment a Redis restart would make the worker invisible to Node again.
    """
    await redis_connection.set_client_name(name)
    single = getattr(redis_connection.conn, "connection", None)
    if single is not None:
        single.client_name = name


async def make_worker_visible_to_node(worker: Any) -> str:
    """Names `worker`'s blocking connection as Node BullMQ does; call between building the Worker
    (`autorun: False`) and `run()`.

    The main connection keeps Python bullmq's name, so Python's `Queue.get_workers()` still finds
    the worker, and Node lists it once, as it lists a Node worker (Node names only the blocking
    connection). `_ensure_client_names` is private to bullmq: it sets bullmq's names first and the
    flag that makes run() leave them alone.
    """
    await worker._ensure_client_names()
    name = node_worker_client_name(worker.prefix, worker.name, worker.workerName)
    if worker.blockingRedisConnection is not None:
        await _rename_connection(worker.blockingRedisConnection, name)
    return name
