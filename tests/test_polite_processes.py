"""Per-host limits across three worker processes: host A limited, host B unlimited and not held back by A."""

from __future__ import annotations

import random
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from mediacache.domain import CacheStatus
from mediacache.service import MediaCache
from tests.support.polite_origin import PoliteOrigin, max_in_window
from tests.support.processes import spawn_worker, wait_for_log
from tests.support.services import SettingsFactory
from tests.support.waiting import wait_until

# The workload, 150 assets each. A's take at least 30 s at 5/s; about 50 s on our 2-core
# machines, since a waiting job comes back a little after its slot and a missed slot is not made up.
A_ASSETS, B_ASSETS = 150, 150
LIMITS = "127.0.0.2=5/s:2,127.0.0.3=unlimited"


@pytest.fixture
def hosts() -> Iterator[tuple[PoliteOrigin, PoliteOrigin]]:
    a, b = PoliteOrigin(host="127.0.0.2", delay_s=0.05), PoliteOrigin(host="127.0.0.3", delay_s=0.05)
    a.start()
    b.start()
    yield a, b
    a.stop()
    b.stop()


async def _cached_at(cache: MediaCache, ids: Sequence[uuid.UUID]) -> bool:
    records = await cache.get_assets(ids)
    return all(r.status is CacheStatus.CACHED for r in records.values()) and len(records) == len(ids)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_three_workers_keep_host_a_to_its_limit_without_holding_back_host_b(
        make_settings: SettingsFactory, hosts: tuple[PoliteOrigin, PoliteOrigin], tmp_path: Path) -> None:
    a, b = hosts
    settings = make_settings(host_limits=LIMITS)
    procs: list[subprocess.Popen[bytes]] = []
    cache = MediaCache(settings)
    try:
        for i in range(3):
            log = tmp_path / f"worker{i}.log"
            procs.append(spawn_worker(settings, log, "--concurrency", "8", MEDIACACHE_HOST_LIMITS=LIMITS))
            await wait_for_log(log, "worker ready", procs[-1])
        n = random.randrange(10**6, 10**8)

        # B alone, for the baseline.
        started = time.monotonic()
        alone = await cache.cache_images([b.url(f"/media/{n + i}.jpg?size=4096") for i in range(B_ASSETS)])
        await wait_until(lambda: _cached_at(cache, alone), timeout_s=60, what="B alone")
        b_alone_s = time.monotonic() - started

        # A and B together: A's jobs are queued first, so they stand ahead of B's.
        started = time.monotonic()
        a_ids = await cache.cache_images([a.url(f"/media/{n + i}.jpg?size=4096") for i in range(A_ASSETS)])
        b_ids = await cache.cache_images([b.url(f"/media/{n + 1000 + i}.jpg?size=4096") for i in range(B_ASSETS)])
        await wait_until(lambda: _cached_at(cache, b_ids), timeout_s=60, what="B beside A")
        b_mixed_s = time.monotonic() - started
        await wait_until(lambda: _cached_at(cache, a_ids), timeout_s=A_ASSETS / 5 + 60, what="A at 5/s")

        times = a.hits("/media/")
        assert len(times) == A_ASSETS
        # At 5/s the rule's burst is one request: Redis grants permits at least 200 ms apart. The
        # origin counts arrivals, which lag their grants by a varying few ms (which worker, its
        # event loop), so a window that starts just after one arrival can hold a sixth: the
        # tolerance for clock edges.
        assert max_in_window(times) <= 6, max_in_window(times)
        assert a.in_flight_max <= 2
        assert b_mixed_s <= max(1.5 * b_alone_s, b_alone_s + 1.0), (b_alone_s, b_mixed_s)
        records = await cache.get_assets([*a_ids, *b_ids])
        assert all(r.attempts == 1 for r in records.values()), "waiting spent attempts"
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(30)
        await cache.close()
