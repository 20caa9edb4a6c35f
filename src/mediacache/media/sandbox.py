"""Decoding in child processes with a memory ceiling and a time limit, so a hostile file costs one child.

Decoders are C (libjpeg, libspng, libwebp, libheif, FFmpeg) fed bytes from the internet. A crash,
a runaway allocation or an endless loop in one of them must not take the worker with it, so every
file is analysed in a child process:

- Each slot is a ProcessPoolExecutor with one `spawn`ed process. One process per executor because a
  pool marks *every* pending task broken when one child dies; with one child per executor a crash
  or a kill fails only the task that caused it. `spawn`, not `fork`: the parent runs an asyncio
  loop, Redis and database connections and threads, none of which survive a fork safely.
- The child's initializer caps its address space (RLIMIT_AS), so an allocation past the ceiling
  fails inside the decoder (reported too_large) instead of pressing the whole machine.
- The time limit is the parent's: a task past it gets its process killed (SIGKILL works while the
  child is stuck inside C code, where no Python-level alarm would run) and the slot is replaced.

As with any `spawn` start, each child imports the parent's main module again: a script that starts
a sandbox needs the `if __name__ == "__main__":` guard (console scripts such as `mediacache` have it).
Close the sandbox after its callers are done: a call still waiting for a free child is not woken.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import resource
import signal
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from mediacache.errors import MediaCacheError
from mediacache.media.derive import DEFAULT_WIDTHS
from mediacache.media.limits import DEFAULT_MAX_FRAMES, DEFAULT_MAX_PIXELS, Limits
from mediacache.media.report import MediaReport, ReportKind

T = TypeVar("T")

# Address space, not resident memory: a child with libvips, FFmpeg and NumPy loaded maps ~0.65 GB
# before it decodes anything (thread stacks and malloc arenas are reserved, mostly never touched).
# Measured here at 49 MP: a JPEG peaks at 0.66 GB mapped / 0.14 GB resident, an interlaced PNG
# (decoded whole) at 0.80 / 0.34 GB, so 2 GiB leaves room without letting one file take the machine.
DEFAULT_MEMORY_BYTES = 2 * 1024**3
DEFAULT_TIMEOUT_S = 30.0
# Replace a child after this many files, so a slow leak in a C library cannot accumulate. A new
# child costs 1-2 s of start-up here (most of it importing the `mediacache` package, whose
# __init__ loads the service, SQLAlchemy and httpx), so not much more often than this.
DEFAULT_RECYCLE_AFTER = 1000


class SandboxError(MediaCacheError):
    """A task did not finish in its child process; `timed_out` tells a time-out from a crash."""

    def __init__(self, message: str, *, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class SandboxStartError(MediaCacheError):
    """A child process could not start (its initializer failed): a configuration problem, not a file's."""


class SandboxClosedError(MediaCacheError):
    """The sandbox was used before `start()` or after `close()`."""


def _init_child(memory_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    import pyvips

    # One libvips thread per child: the slots are the parallelism, and a single thread keeps each
    # child's memory (and so the ceiling above) predictable.
    pyvips.concurrency_set(1)
    # Each file is opened once: libvips' operation cache would only hold memory.
    pyvips.cache_set_max(0)
    import pillow_heif

    pillow_heif.options.DECODE_THREADS = 1  # libheif's own decode threads, for the same reason
    # Import the decoders now, while the child starts, not inside the first task's time limit.
    import mediacache.media.pipeline  # noqa: F401


class _Slot:
    """One child process behind its own executor, and the pid to kill it by."""

    def __init__(self, context: multiprocessing.context.BaseContext, memory_bytes: int) -> None:
        self.executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=context, initializer=_init_child, initargs=(memory_bytes,))
        # The first task, so the child starts (and imports) now and its pid is known before any
        # file can time out in it. Tasks run in submission order on the one process.
        self.pid = self.executor.submit(os.getpid)
        self.tasks = 0

    def kill(self) -> None:
        if self.pid.done() and self.pid.exception() is None:
            try:
                os.kill(self.pid.result(), signal.SIGKILL)
            except ProcessLookupError:
                pass  # it died on its own, which is what brought us here
        self.executor.shutdown(wait=False, cancel_futures=True)


class MediaSandbox:
    """A few child processes that analyse media files; use as `async with MediaSandbox() as sandbox`.

    `workers` children run at once; more callers wait for a free one. Start it in the event loop
    that uses it (the free-slot queue belongs to that loop).
    """

    def __init__(self, *, workers: int = 1, memory_bytes: int = DEFAULT_MEMORY_BYTES,
                 timeout_s: float = DEFAULT_TIMEOUT_S, recycle_after: int = DEFAULT_RECYCLE_AFTER) -> None:
        if workers < 1:
            raise ValueError(f"MediaSandbox needs at least one worker, got workers={workers}")
        self.workers = workers
        self.memory_bytes = memory_bytes
        self.timeout_s = timeout_s
        self.recycle_after = recycle_after
        self._context = multiprocessing.get_context("spawn")
        self._free: asyncio.Queue[_Slot] | None = None
        self._slots: set[_Slot] = set()
        self.replaced = 0  # children replaced after a crash or time-out (for metrics and tests)

    async def __aenter__(self) -> MediaSandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        if self._free is not None:
            return
        self._free = asyncio.Queue()
        for _ in range(self.workers):
            self._free.put_nowait(self._new_slot())
        # Wait for every child to be up, so a caller's first time limit does not include start-up.
        try:
            await asyncio.gather(*(self._started(slot) for slot in self._slots))
        except SandboxStartError:
            await self.close()
            raise

    async def close(self) -> None:
        if self._free is None:
            return
        slots, self._slots, self._free = self._slots, set(), None
        # Waits for running tasks (each is bounded by its time limit) and reaps the children. Only
        # the first shutdown() call of an executor joins, so there is exactly one, with wait=True.
        await asyncio.gather(*(asyncio.to_thread(slot.executor.shutdown, wait=True, cancel_futures=True)
                               for slot in slots))

    def child_pids(self) -> list[int]:
        """The pids of the live children (for RSS measurement)."""
        return [slot.pid.result() for slot in self._slots if slot.pid.done() and slot.pid.exception() is None]

    async def analyze(self, path: str | os.PathLike[str], content_type: str | None = None, *,
                      widths: Sequence[int] = DEFAULT_WIDTHS, max_pixels: int = DEFAULT_MAX_PIXELS,
                      max_frames: int = DEFAULT_MAX_FRAMES, timeout_s: float | None = None) -> MediaReport:
        """Metadata, placeholder and WebP derivatives of the file at `path`; never raises on bad media.

        `content_type` is the sniffed type stored with the asset (None: try it as an image). A child
        that crashes on the file gives kind corrupt; one that runs past `timeout_s` gives corrupt with
        `timed_out=True`; the child is replaced either way and the next call gets a fresh one.
        """
        from mediacache.media.pipeline import analyze_file

        limits = Limits(max_pixels=max_pixels, max_frames=max_frames)
        try:
            return await self.run(analyze_file, os.fspath(path), content_type, tuple(widths), limits,
                                  timeout_s=timeout_s)
        except SandboxError as exc:
            return MediaReport(kind=ReportKind.CORRUPT, reason=str(exc), timed_out=exc.timed_out)

    async def run(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = None) -> T:
        """Run `fn(*args)` (picklable, importable) in a child; raises SandboxError on a crash or time-out.

        What `fn` itself raises is raised here. analyze() is built on this; tests use it to crash a child.
        """
        if self._free is None:
            raise SandboxClosedError("MediaSandbox is not running: use `async with MediaSandbox()` or call start()")
        free = self._free
        limit_s = self.timeout_s if timeout_s is None else timeout_s
        slot = await free.get()
        try:
            # A replacement child may still be starting: that start-up is not the file's time.
            try:
                await self._started(slot)
            except SandboxStartError:
                slot = self._replace(slot, kill=True)
                raise
            future = asyncio.wrap_future(slot.executor.submit(fn, *args))
            try:
                result = await asyncio.wait_for(future, limit_s)
            except TimeoutError:
                slot = self._replace(slot, kill=True)
                raise SandboxError(f"decoding took longer than {limit_s:g} s; its process was killed",
                                   timed_out=True) from None
            except BrokenProcessPool:
                slot = self._replace(slot, kill=True)
                raise SandboxError("the decoder process crashed on this file", timed_out=False) from None
            except asyncio.CancelledError:
                # The caller gave up, the child did not: stop it, or the next file waits behind it.
                if not future.done():
                    slot = self._replace(slot, kill=True)
                raise
            slot.tasks += 1
            if slot.tasks >= self.recycle_after:
                slot = self._replace(slot, kill=False)
            return result
        finally:
            if self._free is free:
                free.put_nowait(slot)
            else:  # closed while this task ran
                slot.executor.shutdown(wait=False, cancel_futures=True)

    async def _started(self, slot: _Slot) -> None:
        try:
            await asyncio.shield(asyncio.wrap_future(slot.pid))
        except BrokenProcessPool as exc:
            # The initializer itself failed: every replacement would fail alike, so say so.
            raise SandboxStartError(
                f"a media sandbox process could not start with memory_bytes={self.memory_bytes:,}; "
                "raise the memory ceiling or check that pyvips, av and pillow-heif import") from exc

    def _new_slot(self) -> _Slot:
        slot = _Slot(self._context, self.memory_bytes)
        self._slots.add(slot)
        return slot

    def _replace(self, slot: _Slot, *, kill: bool) -> _Slot:
        self._slots.discard(slot)
        if kill:
            slot.kill()
            self.replaced += 1
        else:  # recycled: it is idle, let it exit on its own
            slot.executor.shutdown(wait=False)
        return self._new_slot()
