"""Every error as a JSON body `{"error": code, "detail": ...}` with a 4xx/5xx status; never an HTML page."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mediacache.errors import (
    AssetStateError,
    BatchTooLargeError,
    ConfigError,
    DatabaseError,
    InvalidArgumentError,
    InvalidURLError,
    MediaCacheError,
    QueueUnavailableError,
    RecordNotFoundError,
    StorageError,
    UnsafeKeyError,
)

log = logging.getLogger("mediacache.api")

# Most specific first: the first class that matches decides the status and the code.
_DOMAIN_ERRORS: list[tuple[type[MediaCacheError], int, str]] = [
    (InvalidURLError, 422, "invalid_url"),
    (RecordNotFoundError, 404, "not_found"),
    (AssetStateError, 409, "conflict"),
    (BatchTooLargeError, 413, "batch_too_large"),
    (InvalidArgumentError, 422, "invalid_argument"),
    (UnsafeKeyError, 400, "invalid_key"),
    (QueueUnavailableError, 503, "queue_unavailable"),
    (DatabaseError, 503, "database_unavailable"),
    (StorageError, 503, "storage_unavailable"),
    (ConfigError, 500, "misconfigured"),
]

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 408: "request_timeout", 413: "body_too_large",
               415: "unsupported_media_type", 416: "range_not_satisfiable", 422: "invalid_request"}


class ApiError(Exception):
    """Raised by routes for an expected refusal: `status_code`, a code and a detail for the body."""

    def __init__(self, status_code: int, error: str, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.error = error
        self.detail = detail
        self.headers = headers


def error_response(status_code: int, error: str, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status_code, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(MediaCacheError, _domain_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)


async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status_code, exc.error, exc.detail, exc.headers)


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [_problem(e) for e in exc.errors()]
    if any(p["type"] == "json_invalid" for p in problems):
        return error_response(400, "malformed_json", "the request body is not valid JSON: " + problems[0]["msg"])
    summary = "; ".join(f"{'.'.join(str(x) for x in p['loc'])}: {p['msg']}" for p in problems[:5])
    return JSONResponse({"error": "invalid_request", "detail": summary, "problems": problems[:50]},
                        status_code=422)


def _problem(err: Any) -> dict[str, Any]:
    # Only plain fields: the raw error can hold the offending input (any size) and exception objects.
    loc = [x if isinstance(x, int | str) else str(x) for x in err.get("loc", ())]
    return {"loc": loc, "msg": str(err.get("msg", ""))[:500], "type": str(err.get("type", ""))}


async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _HTTP_CODES.get(exc.status_code, "client_error" if exc.status_code < 500 else "server_error")
    return error_response(exc.status_code, code, exc.detail, getattr(exc, "headers", None))


async def _domain_error(request: Request, exc: MediaCacheError) -> JSONResponse:
    for cls, status_code, code in _DOMAIN_ERRORS:
        if isinstance(exc, cls):
            if status_code >= 500:
                log.warning("%s %s: %s", request.method, request.url.path, exc)
            return error_response(status_code, code, str(exc))
    # Any other refusal of the service (a batch too large, ...) is the caller's to fix.
    return error_response(400, "refused", str(exc))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "an unexpected error occurred; the server log has the details")
