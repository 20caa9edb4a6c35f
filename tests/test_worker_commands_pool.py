"""The worker's commands go through a pool: several at once, scripts and lock renewals working, closed at the stop."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from mediacache.service import MediaCache
from mediacache.worker.runner import COMMAND_CONNECTIONS_SPARE
from tests.support.assets import all_in
from tests.support.origin import Origin
from tests.support.services import REDIS_HOST, REDIS_PORT, SettingsFactory, WorkerFactory
from tests.support.waiting import wait_until


async def test_commands_of_jobs_in_flight_do_not_wait_for_one_connection(
        cache: MediaCache, start_worker: WorkerFactory) -> None:
    cw = await start_worker(concurrency=6)
    assert cw._worker is not None
    client = cw._worker.backend.connection.conn
    # On bullmq's own single-connection client every one of these would run on the same connection.
    ids = await asyncio.gather(*(client.execute_command("CLIENT", "ID") for _ in range(5)))
    assert len(set(ids)) > 1, ids
    assert client.connection_pool.max_connections == 6 + COMMAND_CONNECTIONS_SPARE
    # The blocking wait for jobs keeps a connection of its own.
    assert cw._worker.backend.bclient is not client


async def test_replies_are_parsed_by_hiredis_on_every_worker_connection(
        cache: MediaCache, start_worker: WorkerFactory) -> None:
    cw = await start_worker(concurrency=2)
    assert cw._worker is not None
    for client in (cw._worker.backend.connection.conn, cw._worker.backend.bclient):
        await client.ping()
        conn = await client.connection_pool.get_connection()
        try:
            # redis-py falls back to its Python parser, silently, when hiredis is missing.
            assert type(conn._parser).__name__ == "_AsyncHiredisParser", type(conn._parser)
        finally:
            await client.connection_pool.release(conn)


async def test_jobs_longer_than_their_lock_finish_once_through_the_pool(
        make_settings: SettingsFactory, origin: Origin, start_worker: WorkerFactory) -> None:
    # A 1 s lock is renewed every 0.5 s through the pooled client; were the renewals lost, each
    # 3 s download would be taken for stalled and run again.
    mc = MediaCache(make_settings(lock_duration_ms=1000))
    try:
        ids = await mc.cache_images(
            [origin.url(f"/slow/{7400 + n}.mp4?size=60000&chunk=10000&delay_ms=500") for n in range(3)])
        await start_worker(mc, concurrency=3)
        await wait_until(lambda: all_in(mc, ids), timeout_s=30, what="the slow downloads")
        records = await mc.get_assets(ids)
        assert [r.attempts for r in records.values()] == [1, 1, 1]
        stats = await mc.backends.queue.stats()
        assert (stats.completed, stats.failed, stats.active) == (3, 0, 0), stats
    finally:
        await mc.close()


async def test_the_stop_closes_the_pooled_connections(cache: MediaCache, start_worker: WorkerFactory) -> None:
    cw = await start_worker(concurrency=4)
    assert cw._worker is not None
    client = cw._worker.backend.connection.conn
    ids = set(await asyncio.gather(*(client.execute_command("CLIENT", "ID") for _ in range(4))))
    admin = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    try:
        await cw.stop(grace_s=5)

        async def gone() -> bool:
            return not ids & {int(c["id"]) for c in await admin.client_list()}

        await wait_until(gone, timeout_s=10, what="the worker's command connections to close")
    finally:
        await admin.aclose()
