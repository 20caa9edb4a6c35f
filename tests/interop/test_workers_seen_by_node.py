"""Bug 2: bull-board shows "No workers" for a running Python worker.

Node `queue.getWorkers()` runs CLIENT LIST and keeps the clients named `<prefix>:<base64(queue)>`
or `<prefix>:<base64(queue)>:w:<name>`; Python bullmq 3.4.4 names its connections
`<prefix>:<queue>:w:<name>`. mediacache.worker.node_names.make_worker_visible_to_node renames the blocking connection.
"""

from __future__ import annotations

import base64
from typing import Any

from mediacache.worker.node_names import make_worker_visible_to_node, node_worker_client_name
from tests.interop.support import QUEUE, run_node, wait_until

WORKER_NAME = "mediacache@interop-host:4242"


async def _noop(job: Any, token: str) -> None:
    return None


async def _names(redis: Any, prefix: str) -> list[str]:
    return sorted(c["name"] for c in await redis.client_list() if c["name"].startswith(f"{prefix}:"))


async def test_today_node_lists_no_python_worker(prefix, queue, redis, bullmq_worker):
    """Pins the bug: when this fails, python-bullmq names its connections as Node does."""
    await bullmq_worker(_noop, name=WORKER_NAME)
    python_name = f"{prefix}:{QUEUE}:w:{WORKER_NAME}"

    async def named() -> bool:
        return (await _names(redis, prefix)).count(python_name) == 2  # the main and the blocking connection
    await wait_until(named, what="the Python worker's named connections")

    answer = await run_node(prefix, "workers")
    assert answer["workers"] == []
    encoded = base64.b64encode(QUEUE.encode()).decode()
    assert answer["clientName"] == f"{prefix}:{encoded}" == f"{prefix}:bWVkaWEtY2FjaGU="
    assert len(await queue.get_workers()) == 2  # Python's own getWorkers does see it, twice


async def test_with_the_fix_node_lists_the_python_worker_once(prefix, queue, redis, bullmq_worker):
    await bullmq_worker(_noop, name=WORKER_NAME, before_run=make_worker_visible_to_node)
    node_name = node_worker_client_name(prefix, QUEUE, WORKER_NAME)
    assert node_name == f"{prefix}:bWVkaWEtY2FjaGU=:w:{WORKER_NAME}"

    answer = await run_node(prefix, "workers")
    assert [(w["name"], w["rawname"]) for w in answer["workers"]] == [(QUEUE, node_name)]
    # Python's getWorkers keeps finding the main connection, still named the Python way.
    assert [w["rawname"] for w in await queue.get_workers()] == [f"{prefix}:{QUEUE}:w:{WORKER_NAME}"]


async def test_an_unnamed_worker_is_listed_too(prefix, redis, bullmq_worker):
    await bullmq_worker(_noop, before_run=make_worker_visible_to_node)
    answer = await run_node(prefix, "workers")
    assert [w["rawname"] for w in answer["workers"]] == [f"{prefix}:bWVkaWEtY2FjaGU="]


async def test_the_name_survives_a_reconnect(prefix, redis, bullmq_worker):
    await bullmq_worker(_noop, name=WORKER_NAME, before_run=make_worker_visible_to_node, drainDelay=1)
    node_name = node_worker_client_name(prefix, QUEUE, WORKER_NAME)
    killed = [c["id"] for c in await redis.client_list() if c["name"].startswith(f"{prefix}:")]
    assert len(killed) == 2
    for client_id in killed:
        await redis.client_kill_filter(_id=client_id)

    async def back() -> Any:
        clients = [c for c in await redis.client_list() if c["name"] == node_name]
        return clients and all(c["id"] not in killed for c in clients)
    await wait_until(back, 15, "the blocking connection to come back under the Node name")
    answer = await run_node(prefix, "workers")
    assert [w["rawname"] for w in answer["workers"]] == [node_name]


async def test_a_closed_worker_is_no_longer_listed(prefix, bullmq_worker):
    worker = await bullmq_worker(_noop, name=WORKER_NAME, before_run=make_worker_visible_to_node)
    assert len((await run_node(prefix, "workers"))["workers"]) == 1
    await worker.close()

    async def gone() -> bool:
        return (await run_node(prefix, "workers"))["workers"] == []
    await wait_until(gone, 10, "Node to stop listing the closed worker", interval_s=0.2)
