"""How a job reached the worker: a re-run of a finished job (a dashboard's Retry) or a delivery of one still running."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class JobDelivery:
    """What the handler needs to know about how a job reached the worker, free of BullMQ types.

    `rerun_of_finished`: the job had finished and was sent back to wait by Node `job.retry()`
    (bull-board's Retry, reprocessJob.lua) or `queue.retryJobs` (moveJobsToWait.lua). Both delete
    `failedReason`, `finishedOn` and `processedOn` and keep `attemptsMade` and `stacktrace`; every
    script that counts a failed attempt (retryJob, moveToDelayed, moveToFinished) writes
    `failedReason` in the same call. So "attempts made or traces kept, but no failedReason" is only
    ever a finished job sent back.
    `created_at_ms`: the job's `timestamp` (the producer's clock when it added the job).
    """

    rerun_of_finished: bool
    created_at_ms: int

    def asks_retry_of_failed(self, failed_at_ms: int) -> bool:
        """Whether this delivery asks for another download of an asset that FAILED at `failed_at_ms`.

        Yes for a re-run of a finished job, and for a job added after the asset failed (a Node
        producer adding the asset's job again once the old one was removed). No otherwise: an
        attempt delivered again after its worker died between writing FAILED and telling Redis
        (`attemptsMade` is still 0 on a first attempt, so it cannot be told from a new job by
        that alone), or a second job of the asset that was waiting when the asset failed.
        """
        return self.rerun_of_finished or self.created_at_ms > failed_at_ms


def delivery_of(job: Any) -> JobDelivery:
    """Reads a `bullmq.Job` as the processor receives it (fields as `Job.fromJSON` sets them)."""
    attempts_made = int(job.attemptsMade or 0)
    return JobDelivery(
        rerun_of_finished=not job.failedReason and (attempts_made > 0 or bool(job.stacktrace)),
        created_at_ms=int(job.timestamp or 0),
    )
