"""Gives a bullmq Worker a pooled client for its commands instead of its one locked connection."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis


async def pool_worker_commands(worker: Any, client: aioredis.Redis) -> None:
    """Sends `worker`'s non-blocking commands (finishing jobs, lock renewals, the stalled check)
    through `client`; its blocking wait for jobs keeps its own connection and name.

    Built from connection options, bullmq 3.4's worker runs every command on one single-connection
    client: each waits for that connection's lock, and holds it until its reply, so with 16 jobs in
    flight a job's finishing call waited about 49 ms for its turn and the waiting cost a sixth of the
    worker's CPU (docs/benchmarks.md). bullmq registers its scripts on the client and hands the
    client to its script runner at construction, so both are pointed at `client`; call this before
    `run()`. bullmq closes `client` in Worker.close(). tests/test_worker_commands_pool.py fails
    when a bullmq upgrade moves these attributes.
    """
    connection = worker.backend.connection
    replaced = connection.conn
    connection.conn = client
    connection.commands = {}
    connection.loadCommands()
    scripts = worker.backend.scripts
    scripts.redisConnection = connection
    scripts.redisClient = client
    scripts.commands = connection.commands
    worker.client = client
    await replaced.aclose()
