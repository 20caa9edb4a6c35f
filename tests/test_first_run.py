"""A newcomer's first run: a developer's .env stays out of the tests, REDIS_DB alone keeps the embedded
Valkey, a missing schema says what to run, start-up failures and unknown keys are one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest
import redis

from mediacache.errors import NotMigratedError
from mediacache.service import MediaCache
from mediacache.settings import load_settings
from tests.support.ports import free_port
from tests.support.processes import child_env, cli
from tests.support.services import PG_ADMIN_DSN, REDIS_HOST, REDIS_PORT, SettingsFactory

HOSTILE_DOTENV = ("REDIS_DB=9\nDATABASE_URL=bogus\nMEDIACACHE_QUEUE_PREFIX=x\nMEDIACACHE_STORAGE=s3\n"
                  "MEDIACACHE_DATA_DIR=/nonexistent/mediacache\n")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_fixtures_and_their_processes_ignore_a_dotenv(make_settings: SettingsFactory, db_url: str,
                                                          queue_prefix: str) -> None:
    # A developer's checkout with a .env, where the test runs (as `make test` does).
    Path(".env").write_text(HOSTILE_DOTENV)
    with pytest.raises(Exception, match="DATABASE_URL"):
        load_settings()  # the file is where settings look by default, and it is hostile
    settings = make_settings()
    assert (settings.redis_db, settings.queue_prefix, settings.storage_backend) == (0, queue_prefix, "local")
    assert settings.sqlalchemy_url.endswith(db_url.split(":///", 1)[1])

    queued = cli(settings, "cache", "https://example.com/cover.jpg")
    assert queued.returncode == 0, queued.stderr
    stats = cli(settings, "stats", "--json")
    assert stats.returncode == 0 and '"pending": 1' in stats.stdout, stats.stderr
    # The job went to the database the clean-up scans (0), not to the .env's 9.
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=0)
    try:
        assert client.exists(f"{queue_prefix}:media-cache:{queued.stdout.strip()}")
    finally:
        client.close()
    client9 = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=9)
    try:
        assert not list(client9.scan_iter(match=f"{queue_prefix}:*", count=1000))
    finally:
        client9.close()


def test_redis_db_alone_does_not_count_as_a_configured_redis() -> None:
    assert not load_settings(env_file=None, redis_db=3).redis_configured
    for named in ({"redis_host": "cache.internal"}, {"redis_port": 6380}, {"redis_password": "pw"},
                  {"redis_url": "redis://cache:6379/0"}):
        assert load_settings(env_file=None, **named).redis_configured, named


def test_serve_that_cannot_start_says_why_in_one_line(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    env = child_env(settings, REDIS_PORT=str(free_port()))  # a Redis that is configured but down
    done = subprocess.run([sys.executable, "-m", "mediacache", "serve", "--port", "0"], env=env,
                          cwd=settings.data_dir.parent, capture_output=True, text=True, timeout=120, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output and "Application startup failed" not in output, output
    errors = [line for line in output.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: Redis at "), output
    assert "nothing was queued" not in output  # nothing was being queued


async def _fresh_pg_database() -> str:
    name = f"mediacache_empty_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def _drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_database_without_tables_is_reported_as_not_migrated(backend: str, tmp_path: Path) -> None:
    pg_name = await _fresh_pg_database() if backend == "postgresql" else None
    try:
        url = (PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{pg_name}" if pg_name
               else f"sqlite+aiosqlite:///{tmp_path / 'elsewhere.db'}")
        async with MediaCache(load_settings(env_file=None, database_url=url, data_dir=tmp_path / "d")) as mc:
            with pytest.raises(NotMigratedError, match=r"not migrated .*run `mediacache db upgrade`"):
                await mc.cache_stats()
            with pytest.raises(NotMigratedError):
                await mc.get_url(uuid.uuid4())
    finally:
        if pg_name:
            await _drop_pg_database(pg_name)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_stats_in_another_directory_says_not_migrated(make_settings: SettingsFactory, tmp_path: Path) -> None:
    # `cd elsewhere && mediacache stats`: the data directory follows the current directory.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in child_env(make_settings()).items() if k not in ("DATABASE_URL", "MEDIACACHE_DATA_DIR")}
    done = subprocess.run([sys.executable, "-m", "mediacache", "stats"], env=env, cwd=elsewhere,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "not migrated" in done.stderr and "mediacache db upgrade" in done.stderr, done.stderr
    assert "did not answer" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_url_of_a_key_with_no_object_is_an_error(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    garbage = cli(settings, "url", "garbage")
    assert garbage.returncode == 1 and garbage.stdout == ""
    assert "not an asset id and no stored object under that key" in garbage.stderr, garbage.stderr
    # With an original URL to fall back on, that URL is the answer, as get_url gives it.
    fallback = cli(settings, "url", "garbage", "--original-url", "https://example.com/a.jpg")
    assert fallback.returncode == 0 and fallback.stdout.strip() == "https://example.com/a.jpg"

    key = "legacy/covers/a.jpg"
    (settings.objects_dir / "legacy/covers").mkdir(parents=True)
    (settings.objects_dir / key).write_bytes(b"\xff\xd8\xff" + bytes(100))
    stored = cli(settings, "url", key)
    assert stored.returncode == 0 and f"/files/{key}?" in stored.stdout, stored.stderr


def test_version() -> None:
    from mediacache import __version__

    done = subprocess.run([sys.executable, "-m", "mediacache", "--version"], capture_output=True, text=True,
                          timeout=60, check=False, env={**os.environ})
    assert done.returncode == 0 and done.stdout.strip() == f"mediacache {__version__}"
