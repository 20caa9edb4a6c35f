"""Bearer-token checks: MEDIACACHE_API_TOKEN guards writes, and reads when MEDIACACHE_API_TOKEN_READS=true."""

from __future__ import annotations

import hmac

from fastapi import Request

from mediacache.api.errors import ApiError
from mediacache.settings import Settings


def _check(request: Request, settings: Settings) -> None:
    if settings.api_token is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if not header:
        raise ApiError(401, "unauthorized", "this endpoint needs `Authorization: Bearer <MEDIACACHE_API_TOKEN>`",
                       headers={"WWW-Authenticate": "Bearer"})
    expected = settings.api_token.get_secret_value().encode()
    # Starlette decodes header bytes as latin-1: encoding back gives the bytes the client sent,
    # so a UTF-8 token matches. compare_digest on bytes runs in constant time for any input.
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode("latin-1"), expected):
        raise ApiError(403, "forbidden", "the bearer token is not MEDIACACHE_API_TOKEN",
                       headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def require_write(request: Request) -> None:
    """Dependency of every endpoint that changes state."""
    _check(request, request.app.state.settings)


def require_read(request: Request) -> None:
    """Dependency of the JSON read endpoints; open unless MEDIACACHE_API_TOKEN_READS=true."""
    settings: Settings = request.app.state.settings
    if settings.api_token_reads:
        _check(request, settings)
