"""Bearer-token checks: MEDIACACHE_API_TOKEN guards writes, and reads when they are protected.

Reads are protected when MEDIACACHE_API_TOKEN_READS=true, or, when it is not set, when the
server listens beyond loopback (`create_app(..., exposed=True)`).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any, Literal

from fastapi import Request
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from mediacache.api.errors import ApiError, error_response
from mediacache.settings import Settings

Access = Literal["read", "write"]


def _refusal(settings: Settings, header: str) -> ApiError | None:
    """Why a request with this Authorization header is refused, or None when it may go on."""
    if settings.api_token is None:
        return None
    scheme, _, given = header.partition(" ")
    if not header:
        return ApiError(401, "unauthorized", "this endpoint needs `Authorization: Bearer <MEDIACACHE_API_TOKEN>`",
                        headers={"WWW-Authenticate": "Bearer"})
    expected = settings.api_token.get_secret_value().encode()
    # Starlette decodes header bytes as latin-1: encoding back gives the bytes the client sent,
    # so a UTF-8 token matches. compare_digest on bytes runs in constant time for any input.
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode("latin-1"), expected):
        return ApiError(403, "forbidden", "the bearer token is not MEDIACACHE_API_TOKEN",
                        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return None


def reads_protected(state: Any) -> bool:
    """Whether reads need the token: MEDIACACHE_API_TOKEN_READS, else whether the server is exposed."""
    settings: Settings = state.settings
    if settings.api_token_reads is not None:
        return settings.api_token_reads
    return bool(getattr(state, "exposed", False))


def has_token(request: Request) -> bool:
    """True when the caller sent MEDIACACHE_API_TOKEN (never when no token is configured)."""
    settings: Settings = request.app.state.settings
    return settings.api_token is not None and _refusal(settings, request.headers.get("authorization", "")) is None


def require_write(request: Request) -> None:
    """Dependency of every endpoint that changes state (AuthGate checks it first, before the body)."""
    error = _refusal(request.app.state.settings, request.headers.get("authorization", ""))
    if error is not None:
        raise error


def require_read(request: Request) -> None:
    """Dependency of the JSON read endpoints; open unless reads are protected."""
    if reads_protected(request.app.state):
        require_write(request)


def access_of(route: BaseRoute, router_dependencies: Sequence[Any] = ()) -> Access | None:
    """What a route's own dependencies (and its router's) ask for: "write", "read" or nothing."""
    found = {getattr(dep, "dependency", None) for dep in (*router_dependencies, *getattr(route, "dependencies", ()))}
    if require_write in found:
        return "write"
    if require_read in found:
        return "read"
    return None


class AuthGate:
    """Checks the token in front of the app, before any body is read.

    FastAPI reads and parses a request's body before it runs the route's dependencies, so with
    the dependencies alone an anonymous caller could make the server parse a 4 MiB body (and a
    malformed one got 400 instead of 401). The route that will answer is found the way the
    router finds it (the first full match in `routes`, in the order they were included), and its
    own require_read / require_write decide.
    """

    def __init__(self, app: ASGIApp, *, routes: Sequence[tuple[BaseRoute, Access | None]]) -> None:
        self.app = app
        self.routes = list(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            state = scope["app"].state
            access = self._access(scope)
            if access == "write" or (access == "read" and reads_protected(state)):
                headers = dict(scope.get("headers") or [])
                error = _refusal(state.settings, headers.get(b"authorization", b"").decode("latin-1"))
                if error is not None:
                    await error_response(error.status_code, error.error, error.detail, error.headers)(
                        scope, receive, send)
                    return
        await self.app(scope, receive, send)

    def _access(self, scope: Scope) -> Access | None:
        for route, access in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return access
        return None
