"""The worker as a process: refuses an unmigrated database, exits 0 on SIGTERM, closes promptly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mediacache.domain import CacheStatus
from mediacache.service import MediaCache
from tests.support.origin import Origin
from tests.support.processes import spawn_worker, wait_for_log
from tests.support.services import SettingsFactory, WorkerFactory
from tests.support.waiting import wait_until


@pytest.mark.parametrize("extra", [[], ["--processes", "2"]], ids=["one", "two-processes"])
async def test_worker_refuses_an_unmigrated_database(
        make_settings: SettingsFactory, tmp_path: Path, extra: list[str]) -> None:
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}")
    log = tmp_path / "worker.log"
    proc = spawn_worker(settings, log, *extra)
    assert proc.wait(60) == 1
    text = log.read_text()
    assert "run `mediacache db upgrade`" in text and "has no mediacache tables" in text
    assert "Traceback" not in text


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_sigterm_while_idle_and_while_downloading_exits_zero_promptly(
        make_settings: SettingsFactory, tmp_path: Path, origin: Origin) -> None:
    settings = make_settings()
    log = tmp_path / "worker.log"
    proc = spawn_worker(settings, log, "--concurrency", "4")
    try:
        await wait_for_log(log, "worker ready", proc)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
        assert time.monotonic() - t0 < 10, "idle worker took too long to stop"
    finally:
        if proc.poll() is None:
            proc.kill()

    # Now with a download in flight that cannot finish (the origin hangs): the worker hands the
    # job back after its grace period and still exits 0.
    async with MediaCache(settings) as mc:
        asset_id = await mc.cache_image(origin.url("/hang"))
        proc = spawn_worker(settings, log, "--concurrency", "4", MEDIACACHE_SHUTDOWN_GRACE_S="2",
                      MEDIACACHE_READ_TIMEOUT_S="120")
        try:
            async def downloading() -> bool:
                rec = await mc.get_asset(asset_id)
                return rec is not None and rec.status is CacheStatus.DOWNLOADING
            await wait_until(downloading, what="the download to start")
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 30) == 0
            assert time.monotonic() - t0 < 15
        finally:
            if proc.poll() is None:
                proc.kill()
        rec = await mc.get_asset(asset_id)
        # Handed back: not left held by a dead worker, and the error says why.
        assert rec is not None and rec.status is CacheStatus.DOWNLOADING
        assert rec.error == "the worker stopped during the download"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_in_process_worker_closes_promptly_again_and_again(
        cache: MediaCache, start_worker: WorkerFactory, origin: Origin) -> None:
    for i in range(5):
        worker = await start_worker()
        asset_id = await cache.cache_image(origin.url(f"/media/{i}.jpg?size=1000"))

        async def cached() -> bool:
            rec = await cache.get_asset(asset_id)  # noqa: B023
            return rec is not None and rec.status is CacheStatus.CACHED

        await wait_until(cached, what="an asset to cache")
        # Idle past redis-py's default 5 s socket time-out once, where close() used to hang.
        if i == 0:
            await asyncio.sleep(6)
        t0 = time.monotonic()
        await asyncio.wait_for(worker.stop(grace_s=10), 15)
        assert time.monotonic() - t0 < 8


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_reload_restarts_the_worker_when_the_code_changes(
        make_settings: SettingsFactory, tmp_path: Path) -> None:
    import mediacache

    settings = make_settings()
    log = tmp_path / "reload.log"
    proc = spawn_worker(settings, log, "--reload")
    try:
        await wait_for_log(log, "worker ready", proc)
        # A change to the package's code (its modification time is enough for the watcher).
        watched = Path(mediacache.__file__).parent / "records.py"
        os.utime(watched)

        async def restarted() -> bool:
            return log.read_text().count("worker ready") >= 2
        await wait_until(restarted, timeout_s=30, what="the worker to restart after a code change")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.to_thread(proc.wait, 30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_several_processes_share_the_queue_are_restarted_and_stop_together(
        make_settings: SettingsFactory, tmp_path: Path, origin: Origin) -> None:
    import psutil

    settings = make_settings()
    log = tmp_path / "supervisor.log"
    proc = spawn_worker(settings, log, "--processes", "2", "--concurrency", "4")
    try:
        async def ready(count: int) -> bool:
            return log.read_text().count("worker ready") >= count
        await wait_until(lambda: ready(2), timeout_s=60, what="two worker processes")
        children = psutil.Process(proc.pid).children()
        assert len(children) == 2

        async with MediaCache(settings) as mc:
            ids = await mc.cache_images([origin.url(f"/media/{i}.jpg?size=2000") for i in range(40)])

            async def all_cached() -> bool:
                return (await mc.cache_stats()).cached == len(ids)
            await wait_until(all_cached, what="the assets, cached by both processes")

        children[0].kill()
        await wait_until(lambda: ready(3), timeout_s=60, what="a replacement for the killed process")
        assert len(psutil.Process(proc.pid).children()) == 2

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0
        assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE
                       for c in psutil.Process(os.getpid()).children(recursive=True) if c.pid != proc.pid
                       and c.ppid() == proc.pid)
    finally:
        if proc.poll() is None:
            proc.kill()
