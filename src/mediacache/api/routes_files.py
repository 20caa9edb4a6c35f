"""GET /media/{id} (a redirect to what to show) and GET/HEAD /files/{key} (signed local-storage links)."""

from __future__ import annotations

import hashlib
import mimetypes
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from mediacache.api.deps import CacheDep
from mediacache.api.errors import ApiError
from mediacache.api.ranges import ByteRange, parse_range
from mediacache.api.schemas import ErrorResponse
from mediacache.domain import CacheStatus, MediaState
from mediacache.errors import RangeNotSatisfiableError, UnsafeKeyError
from mediacache.service import MediaCache
from mediacache.storage.local import LocalStore
from mediacache.storage.signing import verify

router = APIRouter(tags=["media"])

# A stored object may be opened directly in a browser tab; an SVG (or a file whose type the
# browser would guess) must not run script in our origin.
_FILE_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; "
                               "sandbox",
}
_MAX_REDIRECT_AGE_S = 3600


def redirect_max_age_s(url_ttl_s: int) -> int:
    """How long a browser may keep our redirect to a stored copy: a tenth of the link's life (at
    most an hour), so a cached redirect never points at an expired presigned URL."""
    return min(_MAX_REDIRECT_AGE_S, url_ttl_s // 10)


@router.get("/media/{asset_id}", status_code=302, response_class=RedirectResponse,
            responses={404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
async def media(asset_id: uuid.UUID, cache: CacheDep,
                w: Annotated[int | None, Query(ge=1, le=16383, description="narrowest thumbnail this wide")] = None,
                poster: Annotated[bool, Query(description="a video's poster frame")] = False) -> Response:
    """Redirects to the stored copy once CACHED, else to the original URL; for `<img src>` and `<video src>`.

    `?w=320`: the narrowest WebP thumbnail at least 320 px wide, the original where there is none;
    `?poster=1`: a video's poster (with `w`, the narrowest at least that wide).
    """
    rec = await cache.get_asset(asset_id)
    if rec is None:
        raise ApiError(404, "not_found", f"no asset with id {asset_id}")
    url = await cache.get_url(asset_id, rec.original_url, width=w, poster=poster)
    if url is None:  # removed between the two reads
        raise ApiError(404, "not_found", f"no asset with id {asset_id}")
    if (w is not None or poster) and rec.media_state in (None, MediaState.PENDING.value):
        # A size was asked for before it was made: ask again, to switch to it once it exists.
        cache_control = "no-store"
    elif rec.status is CacheStatus.CACHED:
        cache_control = f"private, max-age={redirect_max_age_s(cache.settings.url_ttl_s)}"
    else:
        # Not stored yet: the next request must ask again, to switch to the copy once it exists.
        cache_control = "no-store"
    return RedirectResponse(url, status_code=302, headers={"Cache-Control": cache_control})


_FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    206: {"description": "the requested byte range"},
    403: {"model": ErrorResponse, "description": "bad or expired signature"},
    404: {"model": ErrorResponse}, 416: {"model": ErrorResponse},
}


@router.get("/files/{key:path}", responses=_FILE_RESPONSES)
async def get_file(key: str, request: Request, cache: CacheDep, exp: str | None = None,
                   sig: str | None = None) -> Response:
    """A stored object of local storage, behind an HMAC-signed, expiring link; supports Range."""
    return await _serve_file(key, request, cache, exp, sig, head=False)


@router.head("/files/{key:path}", responses=_FILE_RESPONSES, include_in_schema=False)
async def head_file(key: str, request: Request, cache: CacheDep, exp: str | None = None,
                    sig: str | None = None) -> Response:
    return await _serve_file(key, request, cache, exp, sig, head=True)


async def _serve_file(key: str, request: Request, cache: MediaCache, exp: str | None, sig: str | None,
                      *, head: bool) -> Response:
    store = cache.backends.store
    if not isinstance(store, LocalStore):
        raise ApiError(404, "not_found", "/files serves local storage only; this server stores in "
                                         f"{store.name}, whose URLs point at the store itself")
    # The signature is checked before the key touches the file system.
    if not verify(request.app.state.signing_key, key, exp, sig):
        raise ApiError(403, "invalid_signature",
                       "the link's signature is wrong or the link expired; get a fresh URL from "
                       "GET /media/{id} or GET /api/assets/{id}")
    try:
        info = await store.head(key)
    except UnsafeKeyError:
        info = None
    if info is None:
        raise ApiError(404, "not_found", "no stored object under this key")
    size = info.size_bytes
    content_type, etag = await _describe(cache, key, size)
    headers = {
        "Accept-Ranges": "bytes", "ETag": etag, "Content-Type": content_type,
        # Never cache past the link's own expiry (exp was checked to be an integer by verify).
        "Cache-Control": f"private, max-age={max(0, int(exp or 0) - int(time.time()))}",
        **_FILE_SECURITY_HEADERS,
    }
    matches = _etags(request.headers.get("if-none-match"))
    if etag in matches or "*" in matches:
        return Response(status_code=304, headers={k: v for k, v in headers.items() if k != "Content-Type"})
    wanted: ByteRange | None = None
    if_range = request.headers.get("if-range")
    if if_range is None or if_range.strip() == etag:
        try:
            wanted = parse_range(request.headers.get("range"), size)
        except RangeNotSatisfiableError:
            raise ApiError(416, "range_not_satisfiable", f"the object has {size} bytes; ask for a range inside it",
                           headers={"Content-Range": f"bytes */{size}"}) from None
    status_code, start, end = (200, 0, size) if wanted is None else (206, wanted.start, wanted.end)
    headers["Content-Length"] = str(end - start)
    if wanted is not None:
        headers["Content-Range"] = wanted.content_range(size)
    if head:
        return Response(status_code=status_code, headers=headers)
    return StreamingResponse(store.open_stream(key, start=start, end=end), status_code=status_code,
                             headers=headers, media_type=content_type)


async def _describe(cache: MediaCache, key: str, size: int) -> tuple[str, str]:
    """Content type and ETag: from the asset's row when the key is its current object, else guessed."""
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == "media":
        rec = await cache.get_asset(parts[1])
        if rec is not None and rec.cache_key == key and rec.sha256:
            return rec.content_type or _guess_type(key), f'"{rec.sha256}"'
    # Keys are written once (each attempt has its own), so key and size identify the bytes.
    return _guess_type(key), '"' + hashlib.sha256(f"{key}\n{size}".encode()).hexdigest()[:32] + '"'


def _guess_type(key: str) -> str:
    return mimetypes.guess_type(key, strict=False)[0] or "application/octet-stream"


def _etags(header: str | None) -> set[str]:
    if not header:
        return set()
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}
