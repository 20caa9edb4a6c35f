"""The database going away for a while: workers keep running, report it, and finish everything after."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mediacache.db.schema import upgrade_async
from mediacache.domain import CacheStatus
from mediacache.errors import DatabaseError
from mediacache.service import MediaCache
from mediacache.settings import load_settings
from tests.support.origin import Origin
from tests.support.services import SettingsFactory, WorkerFactory
from tests.support.waiting import wait_until


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    if found is None:
        pytest.fail(f"{name} not found: the PostgreSQL server package is needed (Debian: postgresql)")
    return found


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own, on its own port, that the test can stop and start."""

    def __init__(self, workdir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.data = workdir / "pgdata"
        self.workdir = workdir
        # initdb and postgres refuse to run as root.
        self._as = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []

    def init(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.getuid() == 0:
            shutil.chown(self.workdir, "postgres")
        subprocess.run([*self._as, _pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                        "-E", "UTF8"], check=True, capture_output=True)

    def start(self) -> None:
        subprocess.run([*self._as, _pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.workdir / "pg.log"),
                        "-w", "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} "
                        f"-c unix_socket_directories={self.workdir} -c fsync=off", "start"],
                       check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run([*self._as, _pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                       check=False, capture_output=True)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    # Not under pytest's tmp_path: that folder is root's alone, and PostgreSQL runs as `postgres`.
    workdir = Path(tempfile.mkdtemp(prefix="mediacache-pg-"))
    server = PrivatePostgres(workdir)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the database here is the private one
async def test_database_outage_is_reported_and_every_asset_ends_cached_after(
        make_settings: SettingsFactory, private_postgres: PrivatePostgres, origin: Origin,
        start_worker: WorkerFactory) -> None:
    settings = make_settings(database_url=private_postgres.url, reconcile_interval_s=1.0, lease_s=1.0)
    await upgrade_async(load_settings(database_url=private_postgres.url, data_dir=settings.data_dir))
    async with MediaCache(settings) as mc:
        first = await mc.cache_images([origin.url(f"/slow/{i}.mp4?size=131072&chunk=32768&delay_ms=100")
                                       for i in range(12)])
        await start_worker(mc, concurrency=4)

        async def some_cached() -> bool:
            return (await mc.cache_stats()).cached >= 2
        await wait_until(some_cached, what="the first assets")

        private_postgres.stop()
        # Queueing during the outage is refused with an error that names the database.
        with pytest.raises(DatabaseError, match=r"the database .* did not answer"):
            await mc.cache_image(origin.url("/media/1.jpg?size=2000"))

        # The outage lasts longer than a job's three attempts (1 s + 2 s of backoff): the work is
        # not lost, because the database, not the queue, says what is left to do.
        async def jobs_gave_up() -> bool:
            return (await mc.queue_stats()).failed >= 1
        await wait_until(jobs_gave_up, timeout_s=60, what="jobs to exhaust their attempts during the outage")

        private_postgres.start()
        later = await mc.cache_image(origin.url("/media/2.jpg?size=2000"))

        async def all_cached() -> bool:
            recs = [await mc.get_asset(i) for i in [*first, later]]
            return all(r is not None and r.status is CacheStatus.CACHED for r in recs)
        await wait_until(all_cached, timeout_s=90, what="every asset after the database came back")
        stats = await mc.cache_stats()
        assert (stats.cached, stats.total, stats.pending, stats.downloading) == (13, 13, 0, 0)
