"""Several worker processes on one machine: start them, restart one that dies, stop them all on SIGTERM."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from types import FrameType

log = logging.getLogger("mediacache.worker.supervisor")

# A child that exits with 1 this soon after starting refused to start (unmigrated database,
# unreachable Redis or storage, bad settings): restarting it would only repeat the error, so
# everything stops. A child killed by a signal, or dying later, is replaced.
_EARLY_EXIT_S = 10.0
_REFUSED_EXIT_CODE = 1
_POLL_S = 0.2


def supervise(concurrency: int | None, processes: int, grace_s: float, *, log_format: str = "text",
              queue: str = "all") -> int:
    """Runs `processes` `mediacache worker` children until SIGTERM/SIGINT; returns the exit code.

    One Python process does the work of one core at most; on a machine with more cores, several
    processes (each with its own event loop, HTTP, database and Redis connections) use them.
    """
    command = [sys.executable, "-m", "mediacache", "worker", "--log-format", log_format, "--queue", queue]
    if concurrency:
        command += ["--concurrency", str(concurrency)]
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children: list[tuple[subprocess.Popen[bytes], float]] = [(subprocess.Popen(command), time.monotonic())
                                                              for _ in range(processes)]
    log.info("started %d worker processes: %s", processes, ", ".join(str(c.pid) for c, _ in children))
    exit_code = 0
    while not stopping:
        for index, (child, started) in enumerate(children):
            code = child.poll()
            if code is None:
                continue
            if code == _REFUSED_EXIT_CODE and time.monotonic() - started < _EARLY_EXIT_S:
                log.error("worker %d exited with %d during start-up; stopping all", child.pid, code)
                stopping, exit_code = True, code or 1
                break
            log.warning("worker %d exited with %d; starting another", child.pid, code)
            children[index] = (subprocess.Popen(command), time.monotonic())
        time.sleep(_POLL_S)

    for child, _ in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s + 10
    for child, _ in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("worker %d did not stop in time; killing it", child.pid)
            child.kill()
            child.wait()
    return exit_code
