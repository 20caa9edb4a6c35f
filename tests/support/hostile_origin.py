"""A hostile HTTP/1.1 origin on 127.0.0.2 and a canary on 127.0.0.1 and [::1] that no download may ever reach.

The origin misbehaves on purpose: it trickles, never ends, lies about lengths, serves error pages
with 200, loops redirects and redirects into the internal network. The canary stands for an
internal service (a database, the cloud metadata endpoint): it listens on the same port as the
origin, so a request that lands on any wrong loopback address meets it and is counted.

Every route carries a caller-chosen token in its path, so a test can count how often the worker
came back for one case (`hits(token)`): final failures must be tried once, transient ones three times.

Routes (GET; the token is any string without `/`, `?` or `#`):

    /img/{token}.{ext}?type=jpeg|png&declared=T&size=N   a real image of that type, declared as T
    /long/{token}.jpg?announce=N&size=M   Content-Length N, then M > N bytes, then close
    /short/{token}.jpg?announce=N&size=M  Content-Length N, then M < N bytes, then close
    /reset/{token}.jpg                    half a body, then a TCP reset
    /slow/{token}.jpg                     a JPEG of 1000 bytes, one byte every 0.5 s
    /trickle/{token}.jpg                  no Content-Length, 1 KiB every 0.5 s, for ever
    /endless/{token}.jpg                  no Content-Length, as fast as possible, for ever
    /endless-chunked/{token}.jpg          chunked encoding, as fast as possible, for ever
    /hang/{token}.jpg                     headers and 11 bytes, then silence
    /silent/{token}.jpg                   reads the request, never answers
    /garbage/{token}.jpg                  not HTTP at all, then close
    /body/{token}?kind=html|json|empty|svg|pdf|zip|elf   a 200 that is no media, declared image/jpeg
    /huge/{token}.mp4                     announces 10 GiB; sends a JPEG head and waits
    /big/{token}.jpg?size=N               no Content-Length, N bytes of JPEG, then close
    /gzip/{token}.jpg?size=N              a gzip body that inflates to N bytes (a few KiB on the wire)
    /status/{token}?code=C&retry_after=R  that status (with Retry-After when given), text body
    /flaky/{token}?fail=N&code=C&retry_after=R   C N times, then a JPEG
    /signed/{token}.jpg?x-expires=T       403, like a CDN whose signed link has run out
    /redirect/{token}?to=URL&code=302     a redirect to URL (no Location header when `to` is absent)
    /loop/{token}?side=a|b                a -> b -> a -> ...
    /chain/{token}?n=N                    N redirects, then a JPEG
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import socket
import struct
import threading
import time
import zipfile
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote, urlsplit

from tests.support.origin import body as jpeg_body

HOST = "127.0.0.2"
CANARY_V4 = "127.0.0.1"
CANARY_V6 = "::1"
# Caps that keep a misbehaving route from outliving its test when the client never hangs up
# (a bug in the code under test must fail the test, not hang the suite).
_CLIENT_GONE_CAP_S = 60.0
_ENDLESS_CAP_BYTES = 1 << 30
_CHUNK = 64 * 1024


def png_bytes() -> bytes:
    """A real 1x1 PNG (signature, IHDR, IDAT, IEND with valid CRCs)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
            + chunk(b"IEND", b""))


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("photo.jpg", b"not really")
    return buffer.getvalue()


# Bodies of 200 responses that are not media: what error pages and mislabelled files look like.
NOT_MEDIA: dict[str, tuple[str, bytes]] = {
    "html": ("image/jpeg", b"<!DOCTYPE html><html><head><title>Access denied</title></head>"
                           b"<body><h1>Error 403</h1><p>You do not have access to this resource.</p></body></html>"),
    "json": ("application/json", b'{"status_code": 10204, "status_msg": "video not available", "data": null}'),
    "empty": ("image/jpeg", b""),
    # SVG can carry scripts; served from our storage origin it would be a stored XSS.
    "svg": ("image/svg+xml", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="1" height="1">'
                             b"<script>alert(document.cookie)</script></svg>"),
    "pdf": ("image/jpeg", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" + bytes(200)),
    "zip": ("image/jpeg", _zip_bytes()),
    "elf": ("image/jpeg", b"\x7fELF\x02\x01\x01\x00" + bytes(8) + b"\x02\x00\x3e\x00" + bytes(200)),
}


@dataclass(frozen=True, slots=True)
class Request:
    at: float      # time.monotonic() when the request head was read
    method: str
    target: str    # path and query, as sent


def _head(status: int, headers: dict[str, str | int] | None = None, *, reason: str = "X") -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _until_client_gone(reader: asyncio.StreamReader, cap_s: float = _CLIENT_GONE_CAP_S) -> None:
    """Returns when the client closes its side (or after `cap_s`); our clients never pipeline."""
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(cap_s):
            while await reader.read(65536):
                pass


class _BackgroundLoop:
    """An event loop on a daemon thread, so servers keep answering while a test blocks its own loop."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Awaitable[object], timeout_s: float = 10.0) -> object:
        async def wrapper() -> object:
            return await coro
        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(timeout_s)

    def stop(self) -> None:
        async def cancel_all() -> None:
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        self.run(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class Canary:
    """Counts every connection it gets; it stands for an internal service that must stay unreachable."""

    hosts: list[str]
    port: int
    connections: int = 0
    peers: list[str] = field(default_factory=list)
    request_lines: list[str] = field(default_factory=list)
    _servers: list[asyncio.Server] = field(default_factory=list)

    async def _start(self) -> None:
        for host in self.hosts:
            self._servers.append(await asyncio.start_server(self._handle, host, self.port))

    async def _close(self) -> None:
        for server in self._servers:
            server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Counted before anything is read: a bare connection to an internal service is already a breach.
        self.connections += 1
        self.peers.append(str(writer.get_extra_info("peername")))
        try:
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
            self.request_lines.append(head.split(b"\r\n", 1)[0].decode("latin-1"))
            writer.write(_head(200, {"Content-Type": "text/plain", "Content-Length": 6, "Connection": "close"})
                         + b"canary")
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind((CANARY_V6, 0))
        return True
    except OSError:
        return False


Route = Callable[[asyncio.StreamReader, asyncio.StreamWriter, str, dict[str, str]], Awaitable[bool]]


class HostileOrigin:
    """The hostile origin on 127.0.0.2:port and its canary on 127.0.0.1:port (and [::1]:port)."""

    def __init__(self) -> None:
        self.port = 0
        self.requests: list[Request] = []
        self.connections = 0
        self.canary: Canary | None = None
        self._flaky_counts: dict[str, int] = {}
        self._bg: _BackgroundLoop | None = None
        self._server: asyncio.Server | None = None
        self._routes: dict[str, Route] = {
            "img": self._img, "long": self._long, "short": self._short, "reset": self._reset,
            "slow": self._slow, "trickle": self._trickle, "endless": self._endless,
            "endless-chunked": self._endless_chunked, "hang": self._hang, "silent": self._silent,
            "garbage": self._garbage, "body": self._body, "huge": self._huge, "big": self._big,
            "gzip": self._gzip, "status": self._status, "flaky": self._flaky, "signed": self._signed,
            "redirect": self._redirect, "loop": self._loop, "chain": self._chain,
        }

    # ---- life cycle --------------------------------------------------------------------------

    def start(self) -> HostileOrigin:
        self._bg = _BackgroundLoop("hostile-origin")
        self._bg.run(self._bind())
        return self

    async def _bind(self) -> None:
        canary_hosts = [CANARY_V4, CANARY_V6] if ipv6_loopback_available() else [CANARY_V4]
        # One port for the origin and every canary address, so that a request to the right port
        # on any wrong loopback address is seen. The port free on 127.0.0.2 may be taken on
        # 127.0.0.1 or ::1 by another test run: then try another one.
        for _attempt in range(50):
            server = await asyncio.start_server(self._handle, HOST, 0, backlog=1024)
            port = int(server.sockets[0].getsockname()[1])
            canary = Canary(canary_hosts, port)
            try:
                await canary._start()
            except OSError:
                await canary._close()
                server.close()
                continue
            self._server, self.port, self.canary = server, port, canary
            return
        raise RuntimeError("no port free on 127.0.0.2, 127.0.0.1 and ::1 at once")

    def stop(self) -> None:
        if self._bg is None:
            return
        bg, self._bg = self._bg, None

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            if self.canary is not None:
                await self.canary._close()

        bg.run(close())
        bg.stop()

    # ---- what tests read ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def redirect_to(self, token: str, target: str, *, code: int = 302) -> str:
        """A URL on the origin that redirects (with `code`) to `target`."""
        return self.url(f"/redirect/{token}?code={code}&to={quote(target, safe='')}")

    def hits(self, token: str) -> list[float]:
        """When the origin read each request of the case `token` (monotonic seconds)."""
        return [r.at for r in list(self.requests) if f"/{token}" in r.target]

    @property
    def canary_connections(self) -> int:
        return self.canary.connections if self.canary is not None else 0

    # ---- serving -----------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
                if len(parts) != 3:
                    return
                method, target = parts[0], parts[1]
                self.requests.append(Request(time.monotonic(), method, target))
                split = urlsplit(target)
                query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
                segments = split.path.strip("/").split("/")
                route = self._routes.get(segments[0]) if len(segments) == 2 else None
                if route is None:
                    writer.write(_head(404, {"Content-Type": "text/plain", "Content-Length": 9}) + b"not found")
                    keep = True
                else:
                    keep = await route(reader, writer, split.path, query)
                await writer.drain()
                if not keep:
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    # Each route returns True to keep the connection for the next request, False to close it.
    # Routes whose body is broken close: the connection's framing is lost after them.

    async def _img(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                   query: dict[str, str]) -> bool:
        kind = query.get("type", "jpeg")
        data = png_bytes() if kind == "png" else jpeg_body("media", 3, int(query.get("size", 2048)))
        declared = query.get("declared", f"image/{kind}")
        writer.write(_head(200, {"Content-Type": declared, "Content-Length": len(data)}) + data)
        return True

    async def _long(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                    query: dict[str, str]) -> bool:
        announce, size = int(query.get("announce", 5000)), int(query.get("size", 9000))
        data = jpeg_body("media", 5, size)
        writer.write(_head(200, {"Content-Type": "image/jpeg", "Content-Length": announce, "Connection": "close"})
                     + data)
        return False

    async def _short(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                     query: dict[str, str]) -> bool:
        announce, size = int(query.get("announce", 10000)), int(query.get("size", 6000))
        writer.write(_head(200, {"Content-Type": "image/jpeg", "Content-Length": announce})
                     + jpeg_body("media", 6, size))
        return False

    async def _reset(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                     query: dict[str, str]) -> bool:
        writer.write(_head(200, {"Content-Type": "image/jpeg", "Content-Length": 10000}) + jpeg_body("media", 7, 5000))
        await writer.drain()
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Linger 0: close() sends RST instead of FIN, the way a crashing proxy drops a download.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        return False

    async def _trickle_bytes(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                             pieces: Callable[[int], bytes | None], delay_s: float) -> None:
        """Writes pieces(0), pieces(1) ... every `delay_s` until None or until the client hangs up."""
        gone = asyncio.create_task(_until_client_gone(reader))
        try:
            index = 0
            while not gone.done():
                piece = pieces(index)
                if piece is None:
                    return
                writer.write(piece)
                await writer.drain()
                index += 1
                await asyncio.wait({gone}, timeout=delay_s)
        finally:
            gone.cancel()

    async def _slow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                    query: dict[str, str]) -> bool:
        data = jpeg_body("media", 8, 1000)
        writer.write(_head(200, {"Content-Type": "image/jpeg", "Content-Length": len(data)}))
        await self._trickle_bytes(reader, writer, lambda i: data[i:i + 1] if i < len(data) else None, 0.5)
        return False

    async def _trickle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                       query: dict[str, str]) -> bool:
        data = jpeg_body("media", 9, 1024)
        writer.write(_head(200, {"Content-Type": "image/jpeg", "Connection": "close"}))
        await self._trickle_bytes(reader, writer, lambda i: data, 0.5)
        return False

    async def _endless(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                       query: dict[str, str]) -> bool:
        data = jpeg_body("media", 10, _CHUNK)
        writer.write(_head(200, {"Content-Type": "image/jpeg", "Connection": "close"}))
        sent = 0
        while sent < _ENDLESS_CAP_BYTES:  # ends with ConnectionResetError when the client gives up
            writer.write(data)
            await writer.drain()
            sent += len(data)
        return False

    async def _endless_chunked(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                               query: dict[str, str]) -> bool:
        data = jpeg_body("media", 11, _CHUNK)
        frame = f"{len(data):x}\r\n".encode() + data + b"\r\n"
        writer.write(_head(200, {"Content-Type": "image/jpeg", "Transfer-Encoding": "chunked"}))
        sent = 0
        while sent < _ENDLESS_CAP_BYTES:
            writer.write(frame)
            await writer.drain()
            sent += len(data)
        return False

    async def _hang(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                    query: dict[str, str]) -> bool:
        writer.write(_head(200, {"Content-Type": "image/jpeg", "Content-Length": 1000}) + jpeg_body("media", 12, 11))
        await writer.drain()
        await _until_client_gone(reader)
        return False

    async def _silent(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                      query: dict[str, str]) -> bool:
        await _until_client_gone(reader)
        return False

    async def _garbage(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                       query: dict[str, str]) -> bool:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02 definitely not HTTP\r\n\r\n")
        return False

    async def _body(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                    query: dict[str, str]) -> bool:
        declared, data = NOT_MEDIA[query.get("kind", "html")]
        writer.write(_head(200, {"Content-Type": declared, "Content-Length": len(data)}) + data)
        return True

    async def _huge(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                    query: dict[str, str]) -> bool:
        writer.write(_head(200, {"Content-Type": "video/mp4", "Content-Length": 10 * 1024 ** 3})
                     + jpeg_body("media", 13, 4096))
        await writer.drain()
        await _until_client_gone(reader)
        return False

    async def _big(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                   query: dict[str, str]) -> bool:
        writer.write(_head(200, {"Content-Type": "image/jpeg", "Connection": "close"}))
        data = jpeg_body("media", 14, int(query.get("size", 2 * 1024 * 1024)))
        for start in range(0, len(data), _CHUNK):
            writer.write(data[start:start + _CHUNK])
            await writer.drain()
        return False

    async def _gzip(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                    query: dict[str, str]) -> bool:
        size = int(query.get("size", 20 * 1024 * 1024))
        # A JPEG start and then zeros: it sniffs as media, so only the size limit can stop it.
        data = gzip.compress(jpeg_body("media", 15, 64) + bytes(size - 64), compresslevel=9)
        writer.write(_head(200, {"Content-Type": "image/jpeg", "Content-Encoding": "gzip",
                                 "Content-Length": len(data)}) + data)
        return True

    async def _status(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                      query: dict[str, str]) -> bool:
        code = int(query.get("code", 500))
        text = f"status {code}".encode()
        headers: dict[str, str | int] = {"Content-Type": "text/plain", "Content-Length": len(text)}
        if "retry_after" in query:
            headers["Retry-After"] = query["retry_after"]
        writer.write(_head(code, headers) + text)
        return True

    async def _flaky(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                     query: dict[str, str]) -> bool:
        self._flaky_counts[path] = self._flaky_counts.get(path, 0) + 1
        if self._flaky_counts[path] <= int(query.get("fail", 1)):
            return await self._status(reader, writer, path, query)
        return await self._img(reader, writer, path, query)

    async def _signed(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                      query: dict[str, str]) -> bool:
        text = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
        writer.write(_head(403, {"Content-Type": "application/xml", "Content-Length": len(text)}) + text)
        return True

    async def _redirect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                        query: dict[str, str]) -> bool:
        headers: dict[str, str | int] = {"Content-Length": 0}
        if "to" in query:
            headers["Location"] = query["to"]
        writer.write(_head(int(query.get("code", 302)), headers))
        return True

    async def _loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                    query: dict[str, str]) -> bool:
        other = "b" if query.get("side", "a") == "a" else "a"
        writer.write(_head(301, {"Location": f"{path}?side={other}", "Content-Length": 0}))
        return True

    async def _chain(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                     query: dict[str, str]) -> bool:
        n = int(query.get("n", 0))
        if n <= 0:
            return await self._img(reader, writer, path, query)
        # Alternate relative and absolute Locations and the redirect codes that keep GET.
        location = f"{path}?n={n - 1}" if n % 2 else self.url(f"{path}?n={n - 1}")
        code = (301, 302, 303, 307, 308)[n % 5]
        writer.write(_head(code, {"Location": location, "Content-Length": 0}))
        return True
