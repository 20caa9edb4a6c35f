"""Failure entries of a job's `stacktrace` as bull-board shows them: the reason first, then a few frames."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

MAX_TRACE_CHARS = 2000


def _frame_line(frame: traceback.FrameSummary) -> str:
    path = Path(frame.filename)
    # site-packages/<pkg>/x.py or src/<pkg>/x.py: the package-relative part is what a reader needs.
    parts = path.parts
    for root in ("site-packages", "src"):
        if root in parts:
            path = Path(*parts[len(parts) - parts[::-1].index(root):])
            break
    else:
        path = Path(path.name)
    return f"    at {frame.name} ({path}:{frame.lineno})"


def _chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        chain.append(current)
        seen.add(id(current))
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return chain


def _describe(exc: BaseException) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _call_stack(chain: list[BaseException]) -> list[traceback.FrameSummary]:
    """The stack where the root cause was raised, outermost call first, pieced together from the
    chain: each traceback runs from where it was caught down to where it was raised, so the inner
    exception's first frame replaces the re-raise line of the same function."""
    frames: list[traceback.FrameSummary] = []
    for exc in chain:
        for frame in traceback.extract_tb(exc.__traceback__):
            if frames and (frames[-1].filename, frames[-1].name) == (frame.filename, frame.name):
                frames[-1] = frame
            else:
                frames.append(frame)
    return frames


def short_failure_trace(exc: BaseException, max_frames: int = 4) -> str:
    """A Node-like entry: `Type: reason`, the innermost `max_frames` frames where the root cause was
    raised (innermost first, as in a JS stack), then a `caused by` line per cause that adds something."""
    chain = _chain(exc)
    root = chain[-1]
    frames = _call_stack(chain)[-max_frames:] if max_frames > 0 else []
    lines = [_describe(exc)]
    lines += [_frame_line(f) for f in reversed(frames)]
    messages = {str(exc)}
    for cause in chain[1:]:
        if str(cause) not in messages or cause is root:
            lines.append(f"  caused by {_describe(cause)}")
            messages.add(str(cause))
    entry = "\n".join(lines)
    return entry if len(entry) <= MAX_TRACE_CHARS else entry[: MAX_TRACE_CHARS - 3] + "..."


def use_short_stacktraces(job: Any, max_frames: int = 4) -> None:
    """Makes this job's failures record `short_failure_trace` entries instead of whole Python tracebacks.

    Python bullmq's `Job.moveToFailed` calls `self.updateStacktrace()`, which appends
    `traceback.format_exc()` (every chained cause, the reason on the last line) and applies the job
    option `stackTraceLimit` (how many entries to keep; it never shortens one). This override keeps
    that rule and changes only what an entry is; set on the instance, it touches no other job.
    """

    def update_stacktrace() -> None:
        exc = sys.exc_info()[1]  # moveToFailed runs inside the worker's `except Exception as err`
        if exc is None:
            return
        job.stacktrace.append(short_failure_trace(exc, max_frames))
        limit = job.opts.get("stackTraceLimit")
        if limit == 0:
            job.stacktrace = []
        elif limit:
            job.stacktrace = job.stacktrace[-limit:]

    job.updateStacktrace = update_stacktrace
