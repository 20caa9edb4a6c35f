"""The HTTP/1.1 client of webhook delivery: one POST per call on kept-alive connections, through the SSRF guard.

A webhook needs one small request and the answer's status, nothing of httpx's machinery (cookies,
redirects, auth, streaming); measured here, a POST through httpx cost 2.3-3.6 ms of CPU and this one
0.5 ms. Connections come from the download's GuardedNetworkBackend, so receivers get exactly its
address checks (each resolved address checked, the connection made to a checked one, TLS verified
against the URL's host name). Only the status matters: an answer's body is read when it is small
and framed (Content-Length or chunked), which keeps the connection for the next POST, and the
connection is closed otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpcore
import httpx

from mediacache.errors import MediaCacheError
from mediacache.fetching.netguard import AddressPolicy, GuardedNetworkBackend, Resolver

# The most of an answer (status line and headers, or a body) that is read; past it the
# connection is closed, which needs reading nothing more.
MAX_READ_BYTES = 64 * 1024
# An idle connection older than this is closed rather than used (servers drop idle ones too).
KEEPALIVE_S = 30.0
_READ_CHUNK = 16 * 1024


class PostError(MediaCacheError):
    """A webhook POST got no answer: no connection, a time-out, a broken or malformed answer."""


@dataclass(eq=False)
class _Connection:
    stream: httpcore.AsyncNetworkStream
    idle_since: float = field(default_factory=time.monotonic)
    buffer: bytes = b""  # read past the previous answer (a server must not send it; never reused then)
    closed: bool = False

    def usable(self) -> bool:
        # A readable idle socket has been closed by the server (or sent junk): either way not reusable.
        return (not self.closed and not self.buffer and time.monotonic() - self.idle_since < KEEPALIVE_S
                and not self.stream.get_extra_info("is_readable"))


@dataclass(frozen=True, slots=True)
class _Target:
    scheme: str
    host: str
    port: int
    host_header: str
    path: str


class WebhookPoster:
    """POSTs bodies and returns the answer's status code; at most `max_idle` idle connections per receiver."""

    def __init__(self, policy: AddressPolicy, *, timeout_s: float, connect_timeout_s: float, max_idle: int,
                 ssl_context: ssl.SSLContext | None = None, resolver: Resolver | None = None) -> None:
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_idle = max_idle
        self.backend = GuardedNetworkBackend(policy, connect_timeout_s=connect_timeout_s, resolver=resolver)
        self.ssl_context = ssl_context or httpx.create_ssl_context(verify=True, trust_env=False)
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._busy: set[_Connection] = set()  # taken by a POST under way
        self.connections_made = 0  # for tests and the bench

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """One POST of `body`; the answer's status code. Raises PostError when there is no answer,
        and the guard's FetchError when the receiver's address is refused."""
        target = _target(url)
        request = _request(target, body, headers)
        key = (target.scheme, target.host, target.port)
        try:
            async with asyncio.timeout(self.timeout_s):
                while True:
                    try:
                        conn, reused = await self._connection(target)
                    except (httpcore.ConnectError, httpcore.ConnectTimeout, OSError) as exc:
                        raise PostError(f"POST {url} failed: {type(exc).__name__}: {exc}") from exc
                    self._busy.add(conn)
                    try:
                        status, keep = await _exchange(conn, request)
                    except (httpcore.NetworkError, OSError, PostError) as exc:
                        await self._drop(conn)
                        if reused and not isinstance(exc, _AnswerStarted):
                            # A kept-alive connection the server dropped as we sent: once more on a new one.
                            continue
                        raise PostError(f"POST {url} failed: {type(exc).__name__}: {exc}") from exc
                    except BaseException:
                        await self._drop(conn)
                        raise
                    break
        except TimeoutError as exc:
            raise PostError(f"POST {url} failed: no answer within {self.timeout_s:g} s") from exc
        self._busy.discard(conn)
        if keep and not conn.closed and len(self._idle.setdefault(key, [])) < self.max_idle:
            conn.idle_since = time.monotonic()
            self._idle[key].append(conn)
        else:
            await _close(conn)
        return status

    async def _drop(self, conn: _Connection) -> None:
        self._busy.discard(conn)
        await _close(conn)

    async def _connection(self, target: _Target) -> tuple[_Connection, bool]:
        idle = self._idle.get((target.scheme, target.host, target.port), [])
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to have been dropped
            if conn.usable():
                return conn, True
            await _close(conn)
        stream = await self.backend.connect_tcp(target.host, target.port, timeout=self.connect_timeout_s)
        if target.scheme == "https":
            try:
                stream = await stream.start_tls(self.ssl_context, server_hostname=target.host,
                                                timeout=self.connect_timeout_s)
            except BaseException:
                # httpcore closes the socket when the handshake fails, not when it is cancelled.
                with contextlib.suppress(Exception):
                    await stream.aclose()
                raise
        self.connections_made += 1
        return _Connection(stream), False

    @property
    def open_connections(self) -> int:
        """Connections held now, idle or in use (for tests and the bench)."""
        return len(self._busy) + sum(len(conns) for conns in self._idle.values())

    async def aclose(self) -> None:
        """Closes every connection held, those of POSTs under way included (they fail); the poster
        can be used again afterwards."""
        idle, self._idle = self._idle, {}
        busy, self._busy = self._busy, set()
        for conn in [*busy, *(c for conns in idle.values() for c in conns)]:
            await _close(conn)


class _AnswerStarted(PostError):
    """The receiver began to answer, so it has the request: trying again would send it twice."""


def _target(url: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PostError(f"{url!r} is not an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    default = port == (443 if parts.scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(parts.scheme, host, port, shown if default else f"{shown}:{port}", path)


def _request(target: _Target, body: bytes, headers: Mapping[str, str]) -> bytes:
    lines = [f"POST {target.path} HTTP/1.1", f"Host: {target.host_header}", "User-Agent: mediacache",
             f"Content-Length: {len(body)}"]
    for name, value in headers.items():
        if any(c in name or c in value for c in "\r\n\0"):
            raise PostError(f"the webhook header {name!r} holds a line break")
        lines.append(f"{name}: {value}")
    # One write: headers and body leave in one system call (and, small as they are, one packet).
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _exchange(conn: _Connection, request: bytes) -> tuple[int, bool]:
    """Sends `request` and reads the answer; its status, and whether the connection can be reused."""
    await conn.stream.write(request)
    head, rest = await _read_head(conn, b"")
    status, version, headers = _parse_head(head)
    while 100 <= status < 200:  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        head, rest = await _read_head(conn, rest)
        status, version, headers = _parse_head(head)
    keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    if status in (204, 304):
        length: int | None = 0
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        keep = keep and await _read_chunked(conn, rest)
        return status, keep
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            return status, False
    else:
        length = None  # the body ends when the server closes
    if length is None or length > MAX_READ_BYTES:
        return status, False
    while len(rest) < length:
        rest += await _read(conn)
    conn.buffer = rest[length:]
    return status, keep


async def _read(conn: _Connection) -> bytes:
    try:
        data = await conn.stream.read(_READ_CHUNK)
    except httpcore.ReadError as exc:
        raise _AnswerStarted(f"the connection closed in the middle of the answer: {exc}") from exc
    if not data:
        raise _AnswerStarted("the connection closed in the middle of the answer")
    return data


async def _read_head(conn: _Connection, rest: bytes) -> tuple[bytes, bytes]:
    buffer = rest
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > MAX_READ_BYTES:
            raise _AnswerStarted(f"the answer's headers are longer than {MAX_READ_BYTES} bytes")
        if not buffer:
            # Nothing of the answer yet: a failure here may be a kept-alive connection the server had closed.
            data = await conn.stream.read(_READ_CHUNK)
            if not data:
                raise httpcore.ReadError("the connection closed before the answer")
            buffer = data
            continue
        buffer += await _read(conn)
    head, _, rest = buffer.partition(b"\r\n\r\n")
    return head, rest


def _parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/") or not code.isdigit():
        raise _AnswerStarted(f"the answer does not start with an HTTP status line: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(code), version, headers


async def _read_chunked(conn: _Connection, rest: bytes) -> bool:
    """Reads a chunked body up to MAX_READ_BYTES; True when it ended there (the connection is reusable)."""
    buffer, total = rest, 0
    while True:
        while b"\r\n" not in buffer:
            if len(buffer) > MAX_READ_BYTES:
                return False
            buffer += await _read(conn)
        size_line, _, buffer = buffer.partition(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            return False
        total += size
        if total > MAX_READ_BYTES:
            return False
        if size == 0:
            # Trailers (rarely any) up to the empty line.
            while not (buffer.startswith(b"\r\n") or b"\r\n\r\n" in buffer):
                if len(buffer) > MAX_READ_BYTES:
                    return False
                buffer += await _read(conn)
            end = 2 if buffer.startswith(b"\r\n") else buffer.index(b"\r\n\r\n") + 4
            conn.buffer = buffer[end:]
            return True
        while len(buffer) < size + 2:
            buffer += await _read(conn)
        buffer = buffer[size + 2:]


async def _close(conn: _Connection) -> None:
    conn.closed = True
    with contextlib.suppress(Exception):
        await conn.stream.aclose()
