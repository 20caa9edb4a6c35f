"""Running a command's coroutine on its event loop, with Ctrl-C delivered inside the loop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

from mediacache.errors import ConfigError

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]
EventLoopChoice = Literal["auto", "uvloop", "asyncio"]


def event_loop_factory(choice: EventLoopChoice) -> LoopFactory | None:
    """The loop factory for MEDIACACHE_EVENT_LOOP; None is asyncio's own loop.

    uvloop runs the worker's many small reads and writes in C: about a tenth less CPU per asset
    (docs/benchmarks.md). `auto` takes it where it is installed (it is a dependency except on
    Windows, which it does not support).
    """
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as exc:
        if choice == "uvloop":
            raise ConfigError("MEDIACACHE_EVENT_LOOP=uvloop, but uvloop is not installed: `pip install uvloop`, "
                              "or set MEDIACACHE_EVENT_LOOP=asyncio") from exc
        return None
    return uvloop.new_event_loop


def run_interruptible(coro_fn: Callable[[], Awaitable[T]], *, loop_factory: LoopFactory | None = None) -> T:
    """`asyncio.run(coro_fn())` on a loop of `loop_factory` (None: asyncio's), where the first
    Ctrl-C cancels the command and the second ends it.

    asyncio.run's own SIGINT handler cancels the main task from a Python signal handler, which can
    run between any two bytecodes, also in the middle of the libraries' own bookkeeping; there a
    cleanup of 500,000 assets was seen to lose the cancel and run on to the end. A handler on the
    loop (add_signal_handler) cancels between callbacks instead. Whatever the command did with the
    cancel, a Ctrl-C ends it as an interrupt (KeyboardInterrupt, exit status 130), never as a
    success. Commands that install their own SIGINT handler (the worker, the HTTP service) replace
    this one for their run.
    """
    async def interruptible() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        interrupts = 0

        def on_sigint() -> None:
            nonlocal interrupts
            interrupts += 1
            if interrupts > 1:
                raise KeyboardInterrupt  # out of the loop at once: the first one's clean-up hangs
            task.cancel()

        loop.add_signal_handler(signal.SIGINT, on_sigint)
        try:
            result = await coro_fn()
        except asyncio.CancelledError:
            if interrupts:
                raise KeyboardInterrupt from None
            raise
        finally:
            loop.remove_signal_handler(signal.SIGINT)
        if interrupts:
            raise KeyboardInterrupt
        return result

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(interruptible())
