"""A real HTTP/1.1 origin on 127.0.0.1 for tests: generated media, faults, and a log of requests."""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

_POOL = random.Random(20261129).randbytes(4 * 1024 * 1024)
JPEG_MAGIC = bytes.fromhex("FFD8FFE000104A46494600")
MP4_MAGIC = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
_CHUNK = 256 * 1024


def body_chunks(kind: str, n: int, size: int) -> Iterator[bytes]:
    """The deterministic body of /media/{n}.jpg or /big/{n}.mp4 of `size` bytes."""
    magic = (JPEG_MAGIC if kind == "media" else MP4_MAGIC)[:size]
    yield magic
    remaining = size - len(magic)
    offset = (n * 7919) % len(_POOL)
    while remaining > 0:
        take = min(remaining, _CHUNK, len(_POOL) - offset)
        yield _POOL[offset:offset + take]
        remaining -= take
        offset = (offset + take) % len(_POOL)


def body(kind: str, n: int, size: int) -> bytes:
    return b"".join(body_chunks(kind, n, size))


def sha256_of(kind: str, n: int, size: int) -> str:
    h = hashlib.sha256()
    for part in body_chunks(kind, n, size):
        h.update(part)
    return h.hexdigest()


@dataclass
class Origin:
    """Routes (GET and HEAD):
    /media/{n}.jpg?size=B        image/jpeg, one write
    /alias/{name}/{n}.jpg?size=B the bytes of /media/{n}.jpg under any other path (.mp4: of /big/{n}.mp4)
    /big/{n}.mp4?size=B          video/mp4, streamed in chunks
    /flaky/{name}.jpg?fail=N&status=S   answers S (default 500) N times, then a JPEG
    /status/{code}               that status with a short text body
    /slow/{n}.mp4?size=B&chunk=C&delay_ms=D   video/mp4, C bytes every D ms
    /hang                        headers, then nothing until the client gives up
    /file/{name}                 bytes registered with `serve_file` (generated media)
    """

    host: str = "127.0.0.1"
    port: int = 0
    requests: list[tuple[float, str]] = field(default_factory=list)
    _counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.AbstractServer | None = None
    _thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def serve_file(self, name: str, data: bytes, content_type: str) -> str:
        """Serves `data` at /file/{name}; returns its URL."""
        self._files[name] = (data, content_type)
        return self.url(f"/file/{name}")

    def hits(self, path_prefix: str) -> list[float]:
        return [t for t, p in list(self.requests) if p.startswith(path_prefix)]

    def start(self) -> Origin:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, self.host, self.port, backlog=1024))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="test-origin", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("test origin did not start")
        return self

    def stop(self) -> None:
        if self._loop is None or self._server is None:
            return
        loop, server = self._loop, self._server

        async def shutdown() -> None:
            server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                try:
                    method, target, _version = line.decode("latin-1").split()
                except ValueError:
                    return
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                self.requests.append((time.monotonic(), target))
                if not await self._respond(writer, method, target):
                    return
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _respond(self, writer: asyncio.StreamWriter, method: str, target: str) -> bool:
        parts = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        segments = parts.path.strip("/").split("/")
        head_only = method == "HEAD"
        route = segments[0] if segments else ""
        if route == "alias" and len(segments) == 3:
            route = "big" if segments[2].endswith(".mp4") else "media"
            segments = [route, segments[2]]
        if route in ("media", "big") and len(segments) == 2:
            n = int(segments[1].split(".")[0])
            size = int(query.get("size", 51200 if route == "media" else 4 * 1024 * 1024))
            ctype = "image/jpeg" if route == "media" else "video/mp4"
            writer.write(_head(200, ctype, size))
            if not head_only:
                for part in body_chunks(route, n, size):
                    writer.write(part)
                    await writer.drain()
            return True
        if route == "slow" and len(segments) == 2:
            n = int(segments[1].split(".")[0])
            size, chunk = int(query.get("size", 4 * 1024 * 1024)), int(query.get("chunk", 65536))
            delay_s = int(query.get("delay_ms", 50)) / 1000
            writer.write(_head(200, "video/mp4", size))
            if head_only:
                return True
            data = body("big", n, size)
            for start in range(0, size, chunk):
                writer.write(data[start:start + chunk])
                await writer.drain()
                await asyncio.sleep(delay_s)
            return True
        if route == "flaky" and len(segments) == 2:
            self._counts[parts.path] += 1
            if self._counts[parts.path] <= int(query.get("fail", 2)):
                code = int(query.get("status", 500))
                writer.write(_head(code, "text/plain", 5) + (b"" if head_only else b"flaky"))
                return True
            data = body("media", 1, 2048)
            writer.write(_head(200, "image/jpeg", len(data)) + (b"" if head_only else data))
            return True
        if route == "file" and len(segments) == 2 and segments[1] in self._files:
            data, ctype = self._files[segments[1]]
            writer.write(_head(200, ctype, len(data)) + (b"" if head_only else data))
            return True
        if route == "status" and len(segments) == 2:
            code = int(segments[1])
            text = f"status {code}".encode()
            writer.write(_head(code, "text/plain", len(text)) + (b"" if head_only else text))
            return True
        if route == "hang":
            writer.write(_head(200, "image/jpeg", 1000) + JPEG_MAGIC)
            await writer.drain()
            await asyncio.sleep(3600)
            return False
        writer.write(_head(404, "text/plain", 9) + (b"" if head_only else b"not found"))
        return True


def _head(status: int, ctype: str, length: int) -> bytes:
    return (f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {length}\r\n"
            "Connection: keep-alive\r\n\r\n").encode("latin-1")
