"""bullmq's Worker, finishing a job and taking the next one in the same script call, as Node's does."""

from __future__ import annotations

from typing import Any

from bullmq import Worker


class ChainingWorker(Worker):
    """Python bullmq finishes a job with `fetch_next=False`, then spends a second Redis round trip
    on `moveToActive` for the next one. Its `moveToFinished` script can move the next waiting job
    to active in the same call (what Node's worker does on a busy queue), under the same lock
    duration and token options as `moveToActive`. Here the finishing call asks for it unless the
    worker is closing or paused, and `processJob` returns the job it got: the run loop processes a
    Job that any finished task returns, so the next job starts in the slot the last one left.

    When the call brings no job (an empty queue, the rate limit), the slot asks with `moveToActive`
    as before, which also keeps bullmq's drained and delay bookkeeping in its own hands. Failed and
    delayed jobs take the usual path; they are the rare ones.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The next job's raw data fetched by a job's finishing call, by that job's token.
        self._fetched: dict[str, list[Any]] = {}
        finish = self.backend.moveToCompleted

        async def finish_and_fetch(job: Any, return_value: Any, remove_on_complete: Any, token: str,
                                   fetch_next: bool = False) -> Any:
            fetch = not (self.closing or self.paused)
            done = await finish(job, return_value, remove_on_complete, token, fetch_next=fetch)
            result = done.get("result") if isinstance(done, dict) else None
            if fetch and result and result[0]:
                self._fetched[token] = result
            return done

        self.backend.moveToCompleted = finish_and_fetch

    async def processJob(self, job: Any, token: str) -> Any:
        try:
            await super().processJob(job, token)
        finally:
            fetched = self._fetched.pop(token, None)
        if fetched is None:
            return None
        job_data, job_id, limit_until, delay_until = fetched
        next_job = await self.nextJobFromJobData(job_data, job_id, limit_until or 0, delay_until or 0, token)
        if next_job is not None:
            self.emit("active", next_job, "waiting")
        return next_job
