"""Shared pieces of the benchmarks: the origin process, an isolated mediacache setup, process figures."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection((host, port), timeout=0.2).close()
        return True
    except OSError:
        return False


def wait_port(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not port_open(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")
        time.sleep(0.05)


@contextmanager
def origin(port: int | None = None) -> Iterator[str]:
    """The benchmark origin (bench/origin.py) on `port` (default ORIGIN_PORT, else 8790), started
    unless already running; one started here stops at the end, so concurrent runs need ports of their own."""
    port = int(os.environ.get("ORIGIN_PORT", "8790")) if port is None else port
    proc = None
    if not port_open(port):
        proc = subprocess.Popen([sys.executable, str(HERE / "origin.py"), "--port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)


def bench_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for mediacache processes of one benchmark run: its own queue prefix and data dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIACACHE_",))}
    env.setdefault("REDIS_HOST", "127.0.0.1")
    env.setdefault("REDIS_PORT", "6379")
    env.update({
        "MEDIACACHE_DATA_DIR": str(data_dir),
        "MEDIACACHE_QUEUE_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
        "MEDIACACHE_ALLOWED_NETWORKS": "127.0.0.0/8",
        "MEDIACACHE_SIGNING_SECRET": "bench",
    })
    env.update(extra)
    return env


def drop_queue_keys(env: dict[str, str]) -> None:
    """Deletes the Redis keys of this run's private queue prefix."""
    import redis

    client = redis.Redis(host=env.get("REDIS_HOST", "127.0.0.1"), port=int(env.get("REDIS_PORT", "6379")),
                         db=int(env.get("REDIS_DB", "0")))
    try:
        keys = list(client.scan_iter(match=f"{env['MEDIACACHE_QUEUE_PREFIX']}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the most resident memory the process ever had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_workers(env: dict[str, str], count: int, concurrency: int, log_dir: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    log_dir.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        log = (log_dir / f"worker-{i}.log").open("wb")
        procs.append(subprocess.Popen([sys.executable, "-m", "mediacache", "worker", "--concurrency", str(concurrency)],
                                      env=env, stdout=log, stderr=subprocess.STDOUT))
    for i, proc in enumerate(procs):
        log_path = log_dir / f"worker-{i}.log"
        deadline = time.monotonic() + 60
        while "worker ready" not in log_path.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {i} did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
