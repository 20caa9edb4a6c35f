"""A Python bullmq worker that records a final failure in the asset table and dies (SIGKILL) before
it can tell Redis: the job stays active under a lock that runs out after 1 s.

    python -m tests.interop.dying_worker PREFIX ASSET_ID
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import redis.asyncio as aioredis
from bullmq import Worker

from tests.interop.support import QUEUE, REDIS, AssetTable


async def main(prefix: str, asset_id: str) -> None:
    client = aioredis.Redis(**REDIS, decode_responses=True)
    assets = AssetTable(client, prefix)

    async def process(job: Any, token: str) -> None:
        await assets.claim(asset_id)
        await assets.record_failure(asset_id, "GET http://origin.test/a.jpg answered 404", final=True)
        os.kill(os.getpid(), signal.SIGKILL)

    worker = Worker(QUEUE, process, {"connection": dict(REDIS), "prefix": prefix, "autorun": False,
                                     "lockDuration": 1000, "name": "dying"})
    await asyncio.wait_for(worker.run(), 15)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
