"""Each error of the tree reaches an HTTP caller with its own status and code, never a bare 400 or 500."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from mediacache.api.errors import install_error_handlers
from mediacache.errors import (
    BatchTooLargeError,
    DatabaseError,
    InvalidArgumentError,
    InvalidURLError,
    MediaCacheError,
    QueueUnavailableError,
    RecordNotFoundError,
)

CASES = [
    (RecordNotFoundError("no carousel with id 7"), 404, "not_found"),
    (BatchTooLargeError("URLs", 20_000, 10_000), 413, "batch_too_large"),
    (InvalidArgumentError("limit=0: ask for 1 to 100 posts per page"), 422, "invalid_argument"),
    (InvalidURLError("ftp://x", "only http and https"), 422, "invalid_url"),
    (QueueUnavailableError("Redis at redis://127.0.0.1:1/0 did not answer"), 503, "queue_unavailable"),
    (DatabaseError("the database did not answer"), 503, "database_unavailable"),
    (MediaCacheError("some other refusal"), 400, "refused"),
]


@pytest.mark.parametrize(("error", "status", "code"), CASES, ids=[type(c[0]).__name__ for c in CASES])
async def test_errors_map_to_their_status(error: Exception, status: int, code: str) -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise error

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.get("/boom")
    assert response.status_code == status
    assert response.json() == {"error": code, "detail": str(error)}
