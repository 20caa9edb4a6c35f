"""Prometheus metrics that the worker observes as downloads finish (process-local counters)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Histogram
from prometheus_client.registry import Collector

# Registered in no registry of their own: each HTTP app adds them to the registry it scrapes, so
# several apps in one process (tests) never clash over a metric name.
DOWNLOAD_SECONDS = Histogram(
    "mediacache_download_seconds",
    "Time from claiming an asset to its object being stored (one observation per attempt).",
    labelnames=("outcome",),
    # Covers a thumbnail on a fast link (tens of ms) up to the 300 s download deadline.
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
    registry=None,
)
DOWNLOADS = Counter(
    "mediacache_downloads",
    "Download attempts finished by workers in this process, by outcome (cached or failed).",
    labelnames=("outcome",),
    registry=None,
)
DOWNLOAD_FAILURES = Counter(
    "mediacache_download_failures",
    "Failed download attempts in this process, by error kind.",
    labelnames=("kind",),
    registry=None,
)


def observe_download(duration_s: float, error_kind: str | None = None) -> None:
    """Records one finished attempt: `error_kind` None means the object was stored."""
    outcome = "cached" if error_kind is None else "failed"
    DOWNLOAD_SECONDS.labels(outcome=outcome).observe(max(0.0, duration_s))
    DOWNLOADS.labels(outcome=outcome).inc()
    if error_kind is not None:
        DOWNLOAD_FAILURES.labels(kind=str(error_kind)).inc()


@contextmanager
def download_attempt() -> Iterator[None]:
    """Times the block as one download attempt and counts how it ended. The job handler wraps its
    download in it: `with download_attempt(): return await self._download_and_store(...)`.

    Ending normally counts as cached. An exception counts as failed, with the `kind` of the first
    error in its cause chain that has one (FinalFailureError is raised from the FetchError), else
    "transient" (time-outs, storage and database errors are retried). Not counted: cancellation (a
    stopping worker hands the job back) and waiting for another worker's lease (`retry_at`).
    """
    started_s = time.monotonic()
    try:
        yield
    except Exception as exc:
        kind = _kind_of(exc)
        if kind is not None:
            observe_download(time.monotonic() - started_s, kind)
        raise
    observe_download(time.monotonic() - started_s)


def _kind_of(exc: BaseException) -> str | None:
    if hasattr(exc, "retry_at"):
        return None
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        kind = getattr(seen, "kind", None)
        if isinstance(kind, str):
            return str(kind)
        seen = seen.__cause__
    return "transient"


def worker_collectors() -> list[Collector]:
    return [DOWNLOAD_SECONDS, DOWNLOADS, DOWNLOAD_FAILURES]
