"""Processes a test starts: the `mediacache` command line, worker processes, a private redis-server."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mediacache.settings import Settings
from tests.support.ports import free_port
from tests.support.services import MEDIACACHE_ENV_PREFIXES
from tests.support.waiting import wait_until


def child_env(settings: Any, **extra: str) -> dict[str, str]:
    """The environment of a `mediacache` child process: the test's settings, nothing of the shell's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(MEDIACACHE_ENV_PREFIXES)}
    env.update({
        "DATABASE_URL": settings.sqlalchemy_url, "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(settings.redis_port),
        "REDIS_DB": str(settings.redis_db),
        "MEDIACACHE_QUEUE_PREFIX": settings.queue_prefix, "MEDIACACHE_DATA_DIR": str(settings.data_dir),
        "MEDIACACHE_SIGNING_SECRET": "test-secret", "MEDIACACHE_ALLOWED_NETWORKS": "127.0.0.0/8",
        "PYTHONUNBUFFERED": "1", "COLUMNS": "200",
    })
    env.update(extra)
    return env


def child_cwd(settings: Any) -> Path:
    """Where a child process runs: the folder that holds the test's data directory, never a
    checkout whose `.env` would add to the test's settings."""
    path = Path(settings.data_dir).resolve().parent
    path.mkdir(parents=True, exist_ok=True)
    return path


def cli(settings: Settings, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Runs `mediacache ARGS` as a user would, against the test's database, Redis and data dir."""
    return subprocess.run([sys.executable, "-m", "mediacache", *args], env=child_env(settings),
                          cwd=child_cwd(settings), capture_output=True, text=True, timeout=timeout_s, check=False)


async def acli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`cli` off the event loop, so the in-process worker of the test keeps running."""
    return await asyncio.to_thread(cli, settings, *args)


def spawn_worker(settings: Any, log: Path, *args: str, **extra: str) -> subprocess.Popen[bytes]:
    """`mediacache worker ARGS` in the background, its output in `log`."""
    return subprocess.Popen([sys.executable, "-m", "mediacache", "worker", *args], cwd=child_cwd(settings),
                            env=child_env(settings, **extra), stdout=log.open("wb"), stderr=subprocess.STDOUT)


async def wait_for_log(log: Path, needle: str, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """Waits until `needle` appears in the process's log; fails at once if the process exits."""
    async def seen() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"worker exited ({proc.returncode}):\n{log.read_text()}")
        return needle in log.read_text()
    await wait_until(seen, timeout_s=timeout_s, what=f"{needle!r} in the worker log")


class PrivateRedis:
    """A redis-server of the test's own, on its own port, that the test can stop and start."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is needed for this test (Debian package redis-server)"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--dir", str(self.workdir), "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("private redis-server exited") from None
                time.sleep(0.025)
        raise RuntimeError("private redis-server did not open its port")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
