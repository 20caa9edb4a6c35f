"""Bug 1: bull-board's Retry (Node `job.retry()`) on a job that the Python worker failed for good.

What the re-run looks like to the Python worker, and the proposed rule (mediacache.worker.delivery.delivery_of) that
tells it from a re-delivery of an attempt whose outcome the database already holds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from typing import Any

from bullmq.custom_errors import UnrecoverableError

from mediacache.worker.delivery import delivery_of
from mediacache.worker.traces import use_short_stacktraces
from tests.interop.support import HERE, JOB_NAME, AssetTable, job_view, run_node, wait_until

# Our job options (queue.job_options) with no backoff delay, so three attempts take milliseconds.
OPTS = {"attempts": 3, "backoff": {"type": "exponential", "delay": 0}}


class TransientError(Exception):
    pass


class CacheProcessor:
    """Imitates CacheWorker._process + CacheJobHandler.process on the AssetTable stand-in.

    `proposed=False` is today's logic: an asset that is not claimable and FAILED completes the job
    as skipped. `proposed=True` adds the change of docs/interop-notes.md: a delivery that asks for a
    retry moves the asset FAILED -> PENDING and downloads it again.
    `download(attempt)` stands for the fetch and upload; it raises TransientError to fail.
    """

    def __init__(self, assets: AssetTable, download: Any, *, proposed: bool) -> None:
        self.assets = assets
        self.download = download
        self.proposed = proposed
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, job: Any, token: str) -> dict[str, Any]:
        use_short_stacktraces(job)
        self.seen.append(job_view(job))
        asset_id = job.data["cacheAssetId"]
        final_attempt = job.attemptsMade + 1 >= int(job.opts.get("attempts") or 1)
        attempt = await self.assets.claim(asset_id)
        if attempt is None:
            asset = await self.assets.get(asset_id)
            if (self.proposed and asset["status"] == "FAILED"
                    and delivery_of(job).asks_retry_of_failed(asset["updated_at_ms"])):
                await self.assets.reopen_failed(asset_id)
                attempt = await self.assets.claim(asset_id)
            if attempt is None:
                return {"status": "skipped", "reason": f"the asset is already {asset['status']}"}
        try:
            await self.download(attempt)
        except TransientError as exc:
            await self.assets.record_failure(asset_id, str(exc), final=final_attempt)
            if final_attempt:
                raise UnrecoverableError(str(exc)) from exc
            raise
        await self.assets.mark_cached(asset_id)
        return {"status": "cached", "attempt": attempt}


def failing_until(good_attempt: int) -> Any:
    async def download(attempt: int) -> None:
        if attempt < good_attempt:
            raise TransientError(f"GET http://origin.test/a.jpg answered 503 (attempt {attempt})")
    return download


async def _fail_for_good(queue: Any, assets: AssetTable, asset_id: str) -> None:
    await assets.insert(asset_id, "http://origin.test/a.jpg")
    await queue.add(JOB_NAME, {"cacheAssetId": asset_id, "url": "http://origin.test/a.jpg"},
                    {"jobId": asset_id, **OPTS})

    async def failed() -> bool:
        return await queue.getJobState(asset_id) == "failed"
    await wait_until(failed, what="the job to fail for good")
    assert (await assets.get(asset_id))["status"] == "FAILED"


async def _retry_with_node(prefix: str, queue: Any, processor: CacheProcessor, asset_id: str,
                           opts: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Node `job.retry('failed', opts)`; returns the re-run as the processor saw it and Node's view."""
    runs_before = len(processor.seen)  # the worker may take the job before node has even exited
    answer = await run_node(prefix, "retry", jobId=asset_id, opts=opts or {})

    async def finished() -> Any:
        return len(processor.seen) > runs_before and await queue.getJobState(asset_id) in ("completed", "failed")
    await wait_until(finished, what="the re-run to finish")
    return processor.seen[runs_before], answer


async def test_a_node_retry_reaches_the_python_worker_with_its_counters_kept(prefix, queue, redis, bullmq_worker):
    assets = AssetTable(redis, prefix)
    processor = CacheProcessor(assets, failing_until(99), proposed=False)
    await bullmq_worker(processor, name="interop-retry")
    asset_id = str(uuid.uuid4())
    await _fail_for_good(queue, assets, asset_id)
    last_attempt = processor.seen[-1]

    rerun, node = await _retry_with_node(prefix, queue, processor, asset_id)

    before, after = node["before"]["raw"], node["after"]["raw"]
    assert before["atm"] == "3" and before["ats"] == "3" and "failedReason" in before and "finishedOn" in before
    # reprocessJob.lua deletes finishedOn, processedOn and failedReason, and keeps atm, ats and stacktrace.
    # On a busy machine the worker may have run the job again before Node read it back: then the
    # re-run's own view below shows the same.
    if node["after"]["state"] in ("waiting", "active"):
        assert "failedReason" not in after and "finishedOn" not in after
        assert after["atm"] == "3" and after["stacktrace"] == before["stacktrace"]
    assert rerun["attemptsMade"] == 3  # not reset: bull-board calls job.retry(state) without options
    assert rerun["attemptsStarted"] == 4
    assert rerun["stalledCounter"] == 0
    assert rerun["failedReason"] is None
    assert rerun["finishedOn"] == 0
    assert rerun["processedOn"] > last_attempt["processedOn"]
    assert len(rerun["stacktrace"]) == 3
    assert rerun["opts"] == last_attempt["opts"] and rerun["data"] == last_attempt["data"]
    assert rerun["timestamp"] == last_attempt["timestamp"]  # the job's creation, not the retry's time
    # attemptsMade + 1 >= attempts: the re-run is a final attempt (a Node worker decides the same).
    assert rerun["attemptsMade"] + 1 >= rerun["opts"]["attempts"]

    # Today's handler: the asset is FAILED, so the re-run completes without downloading.
    assert await queue.getJobState(asset_id) == "completed"
    job = await queue.getJob(asset_id)
    assert job.returnvalue == {"status": "skipped", "reason": "the asset is already FAILED"}
    assert (await assets.get(asset_id))["attempts"] == 3


async def test_with_the_proposal_a_node_retry_downloads_the_failed_asset_again(prefix, queue, redis, bullmq_worker):
    assets = AssetTable(redis, prefix)
    processor = CacheProcessor(assets, failing_until(4), proposed=True)  # the origin is back at attempt 4
    await bullmq_worker(processor, name="interop-retry")
    asset_id = str(uuid.uuid4())
    await _fail_for_good(queue, assets, asset_id)

    rerun, _ = await _retry_with_node(prefix, queue, processor, asset_id)

    assert delivery_of(_JobFromView(rerun)).rerun_of_finished
    assert await queue.getJobState(asset_id) == "completed"
    assert (await queue.getJob(asset_id)).returnvalue == {"status": "cached", "attempt": 4}
    asset = await assets.get(asset_id)
    assert asset["status"] == "CACHED" and asset["attempts"] == 4


async def test_a_retry_that_fails_again_fails_the_job_after_one_attempt(prefix, queue, redis, bullmq_worker):
    assets = AssetTable(redis, prefix)
    processor = CacheProcessor(assets, failing_until(99), proposed=True)
    await bullmq_worker(processor, name="interop-retry")
    asset_id = str(uuid.uuid4())
    await _fail_for_good(queue, assets, asset_id)

    await _retry_with_node(prefix, queue, processor, asset_id)

    assert await queue.getJobState(asset_id) == "failed"
    asset = await assets.get(asset_id)
    assert asset["status"] == "FAILED" and asset["attempts"] == 4
    node = await run_node(prefix, "job", jobId=asset_id)
    assert node["json"]["attemptsMade"] == 4 and node["json"]["failedReason"].startswith("GET http://origin.test")


async def test_a_retry_with_reset_attempts_is_recognised_and_gets_all_attempts(prefix, queue, redis, bullmq_worker):
    assets = AssetTable(redis, prefix)
    processor = CacheProcessor(assets, failing_until(6), proposed=True)  # attempts 4 and 5 fail, 6 works
    await bullmq_worker(processor, name="interop-retry")
    asset_id = str(uuid.uuid4())
    await _fail_for_good(queue, assets, asset_id)

    rerun, _ = await _retry_with_node(prefix, queue, processor, asset_id, {"resetAttemptsMade": True})

    assert rerun["attemptsMade"] == 0 and rerun["failedReason"] is None and len(rerun["stacktrace"]) == 3
    assert delivery_of(_JobFromView(rerun)).rerun_of_finished  # from the kept stacktrace
    await wait_until(lambda: _state_is(queue, asset_id, "completed"), what="the retried job to complete")
    assert (await queue.getJob(asset_id)).returnvalue == {"status": "cached", "attempt": 6}


async def test_a_new_job_added_after_the_failure_is_a_retry_but_one_queued_before_is_not(
        prefix, queue, redis, bullmq_worker):
    assets = AssetTable(redis, prefix)
    processor = CacheProcessor(assets, failing_until(99), proposed=True)
    asset_id = str(uuid.uuid4())
    await assets.insert(asset_id, "http://origin.test/a.jpg")
    data = {"cacheAssetId": asset_id, "url": "http://origin.test/a.jpg"}
    # A Node producer that leaves out jobId: two jobs for one asset, both waiting before it fails.
    first = (await run_node(prefix, "add", name=JOB_NAME, data=data, opts={"attempts": 1}))["id"]
    second = (await run_node(prefix, "add", name=JOB_NAME, data=data, opts={"attempts": 1}))["id"]
    await bullmq_worker(processor, name="interop-retry", concurrency=1)
    await wait_until(lambda: _state_is(queue, second, "completed"), what="the second job to finish")
    assert await queue.getJobState(first) == "failed"
    assert (await queue.getJob(second)).returnvalue == {"status": "skipped", "reason": "the asset is already FAILED"}
    assert (await assets.get(asset_id))["attempts"] == 1

    third = (await run_node(prefix, "add", name=JOB_NAME, data=data, opts={"attempts": 1}))["id"]
    await wait_until(lambda: _state_is(queue, third, "failed"), what="the third job to run")
    assert (await assets.get(asset_id))["attempts"] == 2  # it downloaded again


async def test_a_stalled_attempt_delivered_again_is_not_a_retry(prefix, queue, redis, bullmq_worker):
    """The worker writes FAILED to the database and dies before telling Redis: BullMQ delivers the
    attempt again (attemptsMade still 0, like a new job), and it must not download again."""
    assets = AssetTable(redis, prefix)
    asset_id = str(uuid.uuid4())
    await assets.insert(asset_id, "http://origin.test/a.jpg")
    await queue.add(JOB_NAME, {"cacheAssetId": asset_id, "url": "http://origin.test/a.jpg"},
                    {"jobId": asset_id, **OPTS})
    dying = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.interop.dying_worker", prefix, asset_id, cwd=HERE.parent.parent,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent.parent),
                                                                        os.environ.get("PYTHONPATH")]))})
    assert await asyncio.wait_for(dying.wait(), 20) == -signal.SIGKILL
    assert (await assets.get(asset_id))["status"] == "FAILED"

    processor = CacheProcessor(assets, failing_until(1), proposed=True)  # would succeed if it downloaded
    await bullmq_worker(processor, name="interop-retry", lockDuration=1000, stalledInterval=500)
    await wait_until(lambda: _state_is(queue, asset_id, "completed"), 15, "the stalled job to be taken over")

    redelivery = processor.seen[-1]
    assert redelivery["attemptsMade"] == 0 and redelivery["attemptsStarted"] == 2
    assert redelivery["stalledCounter"] == 1 and redelivery["failedReason"] is None
    assert not delivery_of(_JobFromView(redelivery)).asks_retry_of_failed((await assets.get(asset_id))["updated_at_ms"])
    assert (await queue.getJob(asset_id)).returnvalue == {"status": "skipped", "reason": "the asset is already FAILED"}
    asset = await assets.get(asset_id)
    assert asset["status"] == "FAILED" and asset["attempts"] == 1


async def _state_is(queue: Any, job_id: str, state: str) -> bool:
    return await queue.getJobState(job_id) == state


class _JobFromView:
    """A job_view() dict read back as the attributes delivery_of() reads."""

    def __init__(self, view: dict[str, Any]) -> None:
        self.__dict__.update(view)

