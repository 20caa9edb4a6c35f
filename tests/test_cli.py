"""The command line, run as a user runs it: a real process against real Redis, databases and origin."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from mediacache.broker.embedded import redis_or_embedded
from mediacache.domain import CacheStatus
from mediacache.service import MediaCache
from mediacache.settings import load_settings
from tests.support.origin import Origin, sha256_of
from tests.support.processes import acli, cli
from tests.support.services import SettingsFactory, WorkerFactory
from tests.support.waiting import wait_until

# Runs real worker and Redis processes, whatever fixtures its tests use.
pytestmark = pytest.mark.services


async def test_cache_wait_url_stats_retry_and_cleanup(
        make_settings: SettingsFactory, start_worker: WorkerFactory, origin: Origin) -> None:
    settings = make_settings()
    await start_worker()
    good = origin.url("/media/3.jpg?size=4321")
    bad = origin.url("/status/404")

    done = await acli(settings, "cache", good, bad, "--wait", "--timeout-s", "60")
    ids = done.stdout.split()
    assert len(ids) == 2, done
    assert done.returncode == 1  # one of them FAILED, and it says so
    assert f"{ids[1]} FAILED (not_found)" in done.stderr

    async with MediaCache(settings) as mc:
        rec = await mc.get_asset(ids[0])
        assert rec is not None and rec.status is CacheStatus.CACHED and rec.sha256 == sha256_of("media", 3, 4321)

    url = await acli(settings, "url", ids[0])
    assert url.returncode == 0 and url.stdout.strip().startswith(f"{settings.public_base_url}/files/media/{ids[0]}/")
    assert (await acli(settings, "url", ids[1])).stdout.strip() == bad
    missing = await acli(settings, "url", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 1 and "no URL" in missing.stderr

    stats = json.loads((await acli(settings, "stats", "--json")).stdout)
    assert stats["cache"]["cached"] == 1 and stats["cache"]["failed"] == 1 and stats["cache"]["total"] == 2
    assert stats["cache"]["failed_by_kind"] == {"not_found": 1}
    assert set(stats["queue"]) == {"waiting", "active", "completed", "failed", "delayed"}
    assert "cache: pending 0" in (await acli(settings, "stats")).stdout

    retried = await acli(settings, "retry-failed")
    assert retried.returncode == 0 and "retried 1 failed assets" in retried.stdout

    async with MediaCache(settings) as mc:
        async def failed_again() -> bool:
            rec = await mc.get_asset(ids[1])
            # attempts counts this try only: 1 means the retry has run (and failed) already.
            return rec is not None and rec.status is CacheStatus.FAILED and rec.attempts == 1
        await wait_until(failed_again, what="the retried 404 to fail again")

    cleaned = await acli(settings, "cleanup", "--days", "0")
    assert cleaned.returncode == 0 and "removed 2 assets" in cleaned.stdout
    assert not [p for p in settings.objects_dir.rglob("*") if p.is_file() and ".tmp" not in p.parts]
    # No empty media/<id>/ folder is left behind for the removed assets either.
    assert not [p for p in settings.objects_dir.rglob("*") if ".tmp" not in p.relative_to(settings.objects_dir).parts
                and p.name != ".tmp"]


def test_bad_configuration_and_bad_url_are_one_line_errors(make_settings: SettingsFactory, tmp_path: Path) -> None:
    settings = make_settings()
    bad = cli(settings, "cache", "ftp://example.com/x.jpg")
    assert bad.returncode == 1 and "refused URL 'ftp://example.com/x.jpg'" in bad.stderr
    assert "Traceback" not in bad.stderr

    env_settings = make_settings(database_url=f"sqlite:///{tmp_path / 'x.db'}")
    result = subprocess.run([sys.executable, "-m", "mediacache", "stats"], capture_output=True, text=True,
                            env={**os.environ, "DATABASE_URL": "mysql://u:topsecret@h/db",
                                 "MEDIACACHE_DATA_DIR": str(env_settings.data_dir)}, timeout=60, check=False)
    assert result.returncode == 1 and "DATABASE_URL=" in result.stderr and "topsecret" not in result.stderr


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_db_upgrade_creates_the_schema(db_url: str, tmp_path: Path, queue_prefix: str) -> None:
    if db_url.startswith("sqlite"):
        db_url = f"sqlite:///{tmp_path / 'fresh.db'}"  # the fixture's copy is migrated already
    settings = load_settings(database_url=db_url, data_dir=tmp_path / "d", queue_prefix=queue_prefix)
    result = cli(settings, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert "is at revision head" in result.stderr
    assert cli(settings, "stats", "--json").returncode == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_embedded_valkey_starts_only_when_no_redis_is_configured_or_answering(tmp_path: Path) -> None:
    port = _free_port()
    unconfigured = load_settings(data_dir=tmp_path / "d")
    assert not unconfigured.redis_configured
    with redis_or_embedded(unconfigured, port=port):
        client = redis.Redis(host="127.0.0.1", port=port)
        assert client.ping()
        client.close()
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1).ping()

    # A configured Redis that is down is never silently replaced.
    configured: Any = load_settings(data_dir=tmp_path / "d", redis_port=port)
    with redis_or_embedded(configured, port=port):
        with pytest.raises(redis.ConnectionError):
            redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1).ping()
