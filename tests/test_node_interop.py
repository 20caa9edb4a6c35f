"""The real CacheWorker seen from Node BullMQ 6 (what bull-board runs): Retry, the workers list, failure traces."""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from mediacache.broker.jobs import QUEUE_NAME
from mediacache.domain import CacheStatus
from mediacache.fetching.fetch import Fetcher
from mediacache.service import MediaCache
from mediacache.worker.delivery import JobDelivery
from mediacache.worker.handler import CacheJobHandler
from mediacache.worker.node_names import node_worker_client_name
from tests.interop.support import run_node
from tests.support.origin import Origin
from tests.support.services import REDIS_HOST, REDIS_PORT, SettingsFactory, WorkerFactory
from tests.support.waiting import wait_until

pytestmark = pytest.mark.usefixtures("node_bullmq")


async def _status_is(mc: MediaCache, asset_id: uuid.UUID, status: CacheStatus) -> bool:
    asset = await mc.get_asset(asset_id)
    return asset is not None and asset.status is status


async def test_a_node_retry_of_a_job_our_worker_failed_downloads_the_asset_again(
        make_settings: SettingsFactory, start_worker: WorkerFactory, origin: Origin, queue_prefix: str) -> None:
    # One attempt per job, so the failure is final at once; the origin fails once, then answers.
    async with MediaCache(make_settings(job_attempts=1)) as mc:
        await start_worker(mc)
        asset_id = await mc.cache_image(origin.url(f"/flaky/{uuid.uuid4().hex}.jpg?fail=1&status=503"))
        await wait_until(lambda: _status_is(mc, asset_id, CacheStatus.FAILED), timeout_s=20, what="the failure")

        failed = (await run_node(queue_prefix, "job", jobId=str(asset_id)))
        assert failed["state"] == "failed"
        reason = failed["json"]["failedReason"]
        assert "503" in reason
        # What bull-board shows under the reason: the reason again first, then a few frames.
        [entry] = failed["json"]["stacktrace"]
        assert entry.splitlines()[0] == f"UnrecoverableError: {reason}"
        assert "Traceback" not in entry and len(entry.splitlines()) <= 12

        await run_node(queue_prefix, "retry", jobId=str(asset_id))  # what bull-board's Retry calls
        await wait_until(lambda: _status_is(mc, asset_id, CacheStatus.CACHED), timeout_s=20,
                         what="the retried asset to be cached")
        asset = await mc.get_asset(asset_id)
        assert asset is not None and asset.attempts == 2 and asset.error is None
        job = await run_node(queue_prefix, "job", jobId=str(asset_id))
        assert job["state"] == "completed" and job["json"]["returnvalue"]["status"] == "cached"


async def test_a_duplicate_delivery_of_a_failed_attempt_is_still_skipped(
        cache: MediaCache, origin: Origin) -> None:
    """A delivery that is neither a re-run nor newer than the failure leaves a FAILED asset alone."""
    asset_id = uuid.uuid4()
    await cache.backends.assets.insert_pending([(asset_id, origin.url("/missing/x.jpg"))])
    claim = await cache.backends.assets.claim(asset_id, "t", 30)
    assert claim is not None
    await cache.backends.assets.record_failure(claim, error="gone", error_kind="not_found", final=True)
    handler = CacheJobHandler(cache.settings, cache.backends.assets, cache.backends.store, Fetcher(cache.settings))
    try:
        stalled = JobDelivery(rerun_of_finished=False, created_at_ms=0)
        outcome = await handler.process(asset_id, final_attempt=True, delivery=stalled)
        assert (outcome.status, outcome.reason) == ("skipped", "the asset is already FAILED")
        asset = await cache.get_asset(asset_id)
        assert asset is not None and asset.status is CacheStatus.FAILED and asset.attempts == 1
    finally:
        await handler.fetcher.close()


async def _node_workers(prefix: str) -> list[dict[str, Any]]:
    return list((await run_node(prefix, "workers"))["workers"])


async def test_node_lists_a_running_cache_worker_even_after_a_reconnect(
        cache: MediaCache, start_worker: WorkerFactory, queue_prefix: str) -> None:
    await start_worker()
    name = node_worker_client_name(queue_prefix, QUEUE_NAME, f"mediacache@{socket.gethostname()}:{os.getpid()}")
    assert name.startswith(f"{queue_prefix}:bWVkaWEtY2FjaGU=:w:mediacache@")  # bullmq 6.7.0's naming
    answer = await run_node(queue_prefix, "workers")
    assert answer["clientName"] == node_worker_client_name(queue_prefix, QUEUE_NAME, None)
    assert [(w["name"], w["rawname"]) for w in answer["workers"]] == [(QUEUE_NAME, name)]

    # A dropped connection (a Redis restart, a proxy) comes back under the same name.
    client = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT, decode_responses=True)
    try:
        killed = [c["id"] for c in await client.client_list() if c["name"] == name]
        assert len(killed) == 1
        await client.client_kill_filter(_id=killed[0])

        async def back() -> bool:
            clients = [c for c in await client.client_list() if c["name"] == name]
            return bool(clients) and all(c["id"] not in killed for c in clients)
        await wait_until(back, timeout_s=15, what="the worker's blocking connection to come back named")
    finally:
        await client.aclose()
    assert [w["rawname"] for w in await _node_workers(queue_prefix)] == [name]
