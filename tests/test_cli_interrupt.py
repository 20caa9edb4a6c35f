"""Ctrl-C on a command: the first one cancels it and ends it as an interrupt, whatever the code under it does."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

# The command's coroutine, in a process of its own so that a real SIGINT reaches it. `swallow`
# imitates code that catches the cancel and carries on (as a library did under cleanup).
_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from mediacache.cli.running import event_loop_factory, run_interruptible

    async def command(swallow: bool) -> str:
        print("ready", flush=True)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            if not swallow:
                raise
            await asyncio.sleep(0.2)
        return "finished"

    print(run_interruptible(lambda: command(sys.argv[1] == "swallow"), loop_factory=event_loop_factory(sys.argv[2])),
          flush=True)
""")


def _interrupt(mode: str, loop: str = "asyncio") -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT, mode, loop], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)  # the command sleeps 60 s unless interrupted
    finally:
        proc.kill()
        proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("mode", ["cancel", "swallow"])
def test_a_ctrl_c_ends_the_command_as_an_interrupt_even_if_the_cancel_is_swallowed(mode: str, loop: str) -> None:
    done = _interrupt(mode, loop)
    assert "finished" not in done.stdout  # never reported as a success
    assert "KeyboardInterrupt" in done.stderr, done.stderr
    assert done.returncode != 0
