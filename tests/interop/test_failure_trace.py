"""What bull-board shows for a failed job: `failedReason`, then the `stacktrace` entries.

Python bullmq writes both in Job.moveToFailed: `failedReason = str(err)`, and `updateStacktrace()`
appends `traceback.format_exc()` (a whole Python traceback, every chained cause, the reason last),
then keeps the last `opts.stackTraceLimit` entries. mediacache.worker.traces.use_short_stacktraces makes each entry
a Node-like one: the reason first, a few frames, one line per cause.
"""

from __future__ import annotations

from typing import Any

from bullmq.custom_errors import UnrecoverableError

from mediacache.worker.traces import short_failure_trace, use_short_stacktraces
from tests.interop.support import JOB_NAME, run_node, wait_until

REASON = "GET http://origin.test/a.jpg answered 404 Not Found"


class FetchError(Exception):
    pass


class FinalFailure(Exception):
    pass


def _fetch() -> None:
    try:
        raise ConnectionError("[Errno 111] Connection refused")
    except ConnectionError as exc:
        raise FetchError(REASON) from exc


def _download() -> None:
    try:
        _fetch()
    except FetchError as exc:
        raise FinalFailure(str(exc)) from exc


async def failing_like_ours(job: Any, token: str) -> None:
    """The chain our worker raises: a low-level error, FetchError, FinalFailure, UnrecoverableError."""
    try:
        _download()
    except FinalFailure as exc:
        raise UnrecoverableError(str(exc)) from exc


async def _failed_job(prefix: str, queue: Any, opts: dict[str, Any] | None = None) -> dict[str, Any]:
    job = await queue.add(JOB_NAME, {}, {"attempts": 1, **(opts or {})})

    async def failed() -> bool:
        return await queue.getJobState(job.id) == "failed"
    await wait_until(failed, what="the job to fail")
    return (await run_node(prefix, "job", jobId=job.id))["json"]  # what bull-board reads


async def test_today_the_trace_is_a_whole_python_traceback_with_the_reason_last(prefix, queue, bullmq_worker):
    await bullmq_worker(failing_like_ours)
    job = await _failed_job(prefix, queue)
    assert job["failedReason"] == REASON
    [entry] = job["stacktrace"]
    assert entry.startswith("Traceback (most recent call last):")
    assert entry.rstrip().endswith(f"UnrecoverableError: {REASON}")
    assert entry.count("The above exception was the direct cause of the following exception") == 3
    assert len(entry.splitlines()) > 25


async def test_with_short_traces_the_entry_starts_with_the_reason(prefix, queue, bullmq_worker):
    async def processor(job: Any, token: str) -> None:
        use_short_stacktraces(job)
        await failing_like_ours(job, token)

    await bullmq_worker(processor)
    job = await _failed_job(prefix, queue)
    assert job["failedReason"] == REASON
    [entry] = job["stacktrace"]
    lines = entry.splitlines()
    assert lines[0] == f"UnrecoverableError: {REASON}"
    # Innermost first, as in a JS stack: where the root cause was raised, up to bullmq's worker.
    assert lines[1] == f"    at _fetch (test_failure_trace.py:{_fetch.__code__.co_firstlineno + 2})"
    assert [line.split()[1] for line in lines[1:5]] == ["_fetch", "_download", "failing_like_ours", "processor"]
    # FetchError and FinalFailure only repeat the reason: the root cause is the one cause listed.
    assert lines[5:] == ["  caused by ConnectionError: [Errno 111] Connection refused"]
    assert "Traceback" not in entry


async def test_stack_trace_limit_still_decides_how_many_entries_are_kept(prefix, queue, bullmq_worker):
    async def processor(job: Any, token: str) -> None:
        use_short_stacktraces(job)
        raise RuntimeError(f"attempt {job.attemptsMade + 1}")

    await bullmq_worker(processor)
    job = await _failed_job(prefix, queue, {"attempts": 3, "stackTraceLimit": 2,
                                            "backoff": {"type": "fixed", "delay": 0}})
    assert [e.splitlines()[0] for e in job["stacktrace"]] == ["RuntimeError: attempt 2", "RuntimeError: attempt 3"]
    none_kept = await _failed_job(prefix, queue, {"stackTraceLimit": 0})
    assert none_kept["stacktrace"] == [] and none_kept["failedReason"] == "attempt 1"


def test_a_short_trace_is_bounded_and_names_an_error_without_a_message():
    try:
        raise TimeoutError
    except TimeoutError as exc:
        assert short_failure_trace(exc).splitlines()[0] == "TimeoutError"
    try:
        raise ValueError("x" * 5000)
    except ValueError as exc:
        assert len(short_failure_trace(exc)) == 2000
