"""GET /api/events: outcomes and finished derive steps as Server-Sent Events, from the process's Redis subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from mediacache.api.deps import READ, CacheDep
from mediacache.api.errors import ApiError
from mediacache.api.schemas import ErrorResponse
from mediacache.domain import parse_asset_id
from mediacache.events.bus import Announcement, EventBus

router = APIRouter(prefix="/api", tags=["events"])

# A comment line this often keeps proxies from closing an idle stream.
KEEPALIVE_S = 15.0
SUBSCRIBE_WAIT_S = 3.0
MAX_BUFFERED = 10_000
MAX_IDS = 1000


# In the schema too, so that clients and schema-driven tests know what an id list looks like.
_UUID = r"(?:[0-9A-Fa-f]{32}|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})"
_IDS_PATTERN = rf"^\s*(?:{_UUID}\s*(?:,\s*{_UUID}\s*)*)?$"


@router.get("/events", dependencies=READ, response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}},
                       **{code: {"model": ErrorResponse} for code in (401, 403, 422)}})
async def events(cache: CacheDep, ids: Annotated[str | None, Query(
        pattern=_IDS_PATTERN, description="comma-separated asset ids to follow (all assets when left out)")] = None,
) -> StreamingResponse:
    """`asset.cached`, `asset.failed` and `asset.derived` as they happen (`event:` the type, `data:`
    JSON with `type`, `asset_id` and `status`, and `media_state` for `asset.derived`); `?ids=a,b`
    keeps only those assets. The stream starts with a `: ready` comment once it is subscribed.
    Best effort: after a gap, read the assets again."""
    wanted = _parse_ids(ids)
    return StreamingResponse(_stream(cache.backends.bus, wanted), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _parse_ids(ids: str | None) -> set[uuid.UUID] | None:
    if ids is None or not ids.strip():
        return None
    parts = [p.strip() for p in ids.split(",") if p.strip()]
    if len(parts) > MAX_IDS:
        raise ApiError(422, "too_many_ids", f"?ids= names {len(parts)} assets; give at most {MAX_IDS}")
    parsed = set()
    for part in parts:
        asset_id = parse_asset_id(part)
        if asset_id is None:
            raise ApiError(422, "invalid_id", f"?ids= has {part[:60]!r}, which is not an asset id (a UUID)")
        parsed.add(asset_id)
    return parsed


async def _stream(bus: EventBus, wanted: set[uuid.UUID] | None) -> AsyncIterator[str]:
    queue: asyncio.Queue[Announcement] = asyncio.Queue(MAX_BUFFERED)

    def on_announcement(message: Announcement) -> None:
        if wanted is None or message.asset_id in wanted:
            # A client that stops reading loses events rather than growing this queue without bound.
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(message)

    stop = bus.listen(on_announcement)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(bus.subscribed.wait(), timeout=SUBSCRIBE_WAIT_S)
        yield "retry: 3000\n: ready\n\n"
        while True:
            try:
                message = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_S)
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            yield f"event: {message.type}\ndata: {message.as_json()}\n\n"
    finally:
        stop()
