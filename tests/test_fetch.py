"""The download stream itself: compressed bodies are inflated a bounded piece at a time, one request per attempt."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from mediacache.domain import ErrorKind
from mediacache.errors import FetchError
from mediacache.fetching.fetch import Fetcher
from mediacache.settings import load_settings
from tests.support.hostile_origin import HostileOrigin, jpeg_body

LIMIT_BYTES = 1024 * 1024


def _fetcher(tmp_path: Path) -> Fetcher:
    return Fetcher(load_settings(allowed_networks="127.0.0.2/32", max_bytes=LIMIT_BYTES, data_dir=tmp_path))


@pytest.fixture(scope="module")
def bomb_server() -> Iterator[str]:
    """Serves one gzip bomb built in advance, so building it is not counted as the client's memory."""
    bomb = gzip.compress(jpeg_body("media", 15, 64) + bytes(256 * 1024 * 1024 - 64), compresslevel=9)
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Encoding: gzip\r\n"
            f"Content-Length: {len(bomb)}\r\nConnection: close\r\n\r\n").encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head)
        writer.write(bomb)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.2", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.2:{server.sockets[0].getsockname()[1]}/bomb.jpg"
    loop.call_soon_threadsafe(server.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


async def test_a_gzip_bomb_is_stopped_with_memory_near_the_limit(bomb_server: str, tmp_path: Path) -> None:
    fetcher = _fetcher(tmp_path)
    tracemalloc.start()
    try:
        with pytest.raises(FetchError) as info:
            async with fetcher.open(bomb_server) as download:
                async for _ in download.chunks():
                    pass
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await fetcher.close()
    assert info.value.kind is ErrorKind.TOO_LARGE
    # Inflating whole network reads (what httpx does) peaked at tens of MiB per download here.
    assert peak_bytes < 4 * LIMIT_BYTES, f"peak {peak_bytes / 2**20:.1f} MiB"


async def test_a_gzip_encoded_body_is_stored_decoded(hostile: HostileOrigin, tmp_path: Path) -> None:
    fetcher = _fetcher(tmp_path)
    size = 700_000
    try:
        async with fetcher.open(hostile.url(f"/gzip/ok.jpg?size={size}")) as download:
            content_type, body = await download.media_body(["image/*"])
            data = b"".join([chunk async for chunk in body])
    finally:
        await fetcher.close()
    assert content_type == "image/jpeg"
    assert data == jpeg_body("media", 15, 64) + bytes(size - 64)


async def test_a_dropped_connection_is_one_request_and_a_transient_failure(tmp_path: Path) -> None:
    requests: list[bytes] = []

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.readuntil(b"\r\n\r\n"))
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.2", 0)
    fetcher = _fetcher(tmp_path)
    try:
        for _ in range(2):
            with pytest.raises(FetchError) as info:
                async with fetcher.open(f"http://127.0.0.2:{server.sockets[0].getsockname()[1]}/x.jpg"):
                    pass
            assert info.value.kind is ErrorKind.TRANSIENT and info.value.host_verdict == "failure"
    finally:
        await fetcher.close()
        server.close()
        await server.wait_closed()
    # aiohttp on its own sends an idempotent request again when the connection drops.
    assert len(requests) == 2
