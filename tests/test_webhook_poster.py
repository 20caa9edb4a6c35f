"""WebhookPoster against real servers on 127.0.0.1: keep-alive, every way an answer can end, a
dropped kept-alive connection, time-outs, the SSRF guard and TLS."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mediacache.errors import FetchError
from mediacache.events.poster import MAX_READ_BYTES, PostError, WebhookPoster
from mediacache.fetching.netguard import AddressPolicy

LOOPBACK = AddressPolicy(["127.0.0.0/8"])
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Seen:
    connection: int  # which connection, counted from 0
    number: int  # which request on that connection, counted from 0
    head: str
    body: bytes


# (connection, request number on it) -> the bytes to answer, or None to close without answering.
Answer = Callable[[int, int], bytes | None]


@dataclass
class Server:
    port: int
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0

    def url(self, path: str = "/hooks", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"


@asynccontextmanager
async def serving(answer: Answer, ssl_context: ssl.SSLContext | None = None,
                  close_after: Callable[[int, int], bool] = lambda c, n: False) -> AsyncIterator[Server]:
    state = Server(0)
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection, state.connections = state.connections, state.connections + 1
        task = asyncio.current_task()
        if task is not None:
            handlers.add(task)
        try:
            for number in range(1000):
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                length = next((int(line.split(":", 1)[1]) for line in head.split("\r\n")
                               if line.lower().startswith("content-length:")), 0)
                state.seen.append(Seen(connection, number, head, await reader.readexactly(length)))
                reply = answer(connection, number)
                if reply is None:
                    return
                writer.write(reply)
                await writer.drain()
                if close_after(connection, number):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl_context)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for task in handlers:  # connections the client left open (a test that failed midway)
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


def poster(policy: AddressPolicy = LOOPBACK, **options: object) -> WebhookPoster:
    values: dict[str, object] = {"timeout_s": 5.0, "connect_timeout_s": 2.0, "max_idle": 4, **options}
    return WebhookPoster(policy, **values)  # type: ignore[arg-type]


async def test_posts_go_out_whole_and_share_one_kept_alive_connection() -> None:
    async with serving(lambda c, n: OK) as server:
        p = poster()
        try:
            for i in range(20):
                assert await p.post(server.url("/hooks/media?x=1"), f'{{"n":{i}}}'.encode(),
                                    {"webhook-id": f"evt_{i}", "content-type": "application/json"}) == 200
        finally:
            await p.aclose()
    assert p.connections_made == 1 and server.connections == 1
    assert [s.body for s in server.seen] == [f'{{"n":{i}}}'.encode() for i in range(20)]
    first = server.seen[0].head.split("\r\n")
    assert first[0] == "POST /hooks/media?x=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}" in first and "webhook-id: evt_0" in first
    assert "Content-Length: 7" in first and "content-type: application/json" in first


@pytest.mark.parametrize(("answer", "status", "reused"), [
    (b"HTTP/1.1 204 No Content\r\n\r\n", 204, True),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n", 200, True),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n", 200, True),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", 201, True),
    (b"HTTP/1.1 500 Oops\r\nContent-Length: 5\r\n\r\noops!", 500, True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", 200, False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, False),
    (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_READ_BYTES + 1) + b"x" * (MAX_READ_BYTES + 1), 200,
     False),
])
async def test_every_way_an_answer_ends_gives_its_status_and_keeps_the_connection_only_when_it_can(
        answer: bytes, status: int, reused: bool) -> None:
    async with serving(lambda c, n: answer) as server:
        p = poster()
        try:
            assert [await p.post(server.url(), b"{}", {}) for _ in range(3)] == [status] * 3
        finally:
            await p.aclose()
    assert p.connections_made == (1 if reused else 3)


async def test_an_answer_without_a_length_ends_with_the_connection() -> None:
    def answer(c: int, n: int) -> bytes | None:
        return b"HTTP/1.1 503 Busy\r\nContent-Type: text/plain\r\n\r\nbusy, try later"

    async with serving(answer) as server:
        p = poster()
        try:
            # The server keeps the connection open; the status is known and the connection dropped.
            assert await p.post(server.url(), b"{}", {}) == 503
            assert await p.post(server.url(), b"{}", {}) == 503
        finally:
            await p.aclose()
    assert p.connections_made == 2


async def test_a_redirect_is_an_answer_not_followed() -> None:
    async with serving(lambda c, n: b"HTTP/1.1 302 Found\r\nLocation: http://10.0.0.1/\r\nContent-Length: 0\r\n\r\n"
                       ) as server:
        p = poster()
        try:
            assert await p.post(server.url(), b"{}", {}) == 302
        finally:
            await p.aclose()
    assert len(server.seen) == 1


async def test_a_kept_alive_connection_the_server_dropped_is_replaced_once() -> None:
    # Every connection answers its first request and closes on its second without a word.
    async with serving(lambda c, n: OK if n == 0 else None) as server:
        p = poster()
        try:
            assert [await p.post(server.url(), f"{i}".encode(), {}) for i in range(3)] == [200, 200, 200]
        finally:
            await p.aclose()
    # The dropped requests went again on a fresh connection: a receiver can see a webhook twice.
    assert [(s.connection, s.number, s.body) for s in server.seen] == [
        (0, 0, b"0"), (0, 1, b"1"), (1, 0, b"1"), (1, 1, b"2"), (2, 0, b"2")]


async def test_a_fresh_connection_closed_without_an_answer_is_an_error() -> None:
    async with serving(lambda c, n: None) as server:
        p = poster()
        try:
            with pytest.raises(PostError, match=r"POST http://127\.0\.0\.1:\d+/hooks failed: ReadError"):
                await p.post(server.url(), b"{}", {})
        finally:
            await p.aclose()
    assert server.connections == 1


async def test_an_answer_cut_off_in_the_middle_is_an_error_and_not_sent_again() -> None:
    # The second request on the connection gets half an answer, then the connection closes.
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok"
    async with serving(lambda c, n: OK if n == 0 else cut, close_after=lambda c, n: n == 1) as server:
        p = poster()
        try:
            assert await p.post(server.url(), b"a", {}) == 200
            with pytest.raises(PostError, match="closed in the middle of the answer"):
                await p.post(server.url(), b"b", {})
        finally:
            await p.aclose()
    # The receiver had begun to answer: it has the request, which is not sent a second time.
    assert [s.body for s in server.seen] == [b"a", b"b"]


async def test_no_answer_within_the_time_limit() -> None:
    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # holds the connection, answers nothing

    server = await asyncio.start_server(never, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    p = poster(timeout_s=0.3)
    try:
        with pytest.raises(PostError, match=r"no answer within 0\.3 s"):
            await p.post(f"http://127.0.0.1:{port}/", b"{}", {})
    finally:
        await p.aclose()
        server.close()


async def test_aclose_closes_idle_connections_and_that_of_a_post_under_way() -> None:
    requests, closed = asyncio.Queue[bool](), asyncio.Queue[bool]()

    def receiver(answers: bool) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.readuntil(b"\r\n\r\n{}")
                requests.put_nowait(answers)
                if answers:
                    writer.write(OK)
                    await writer.drain()
                await reader.read()  # until the client closes the connection
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                closed.put_nowait(answers)
                writer.close()
        return handle

    answering = await asyncio.start_server(receiver(True), "127.0.0.1", 0)
    silent = await asyncio.start_server(receiver(False), "127.0.0.1", 0)
    p = poster(timeout_s=30.0)
    try:
        assert await p.post(f"http://127.0.0.1:{answering.sockets[0].getsockname()[1]}/", b"{}", {}) == 200
        under_way = asyncio.create_task(p.post(f"http://127.0.0.1:{silent.sockets[0].getsockname()[1]}/", b"{}", {}))
        async with asyncio.timeout(10):
            assert [await requests.get(), await requests.get()] == [True, False]
        assert p.open_connections == 2  # one idle, one waiting for its answer
        await p.aclose()
        assert p.open_connections == 0
        async with asyncio.timeout(5):  # both receivers see their connection closed
            assert sorted([await closed.get(), await closed.get()]) == [False, True]
        with pytest.raises(PostError):
            await under_way
    finally:
        await p.aclose()
        answering.close()
        silent.close()


async def test_nothing_listening_is_a_post_error() -> None:
    async with serving(lambda c, n: OK) as server:
        port = server.port
    p = poster()
    try:
        with pytest.raises(PostError, match="ConnectError"):
            await p.post(f"http://127.0.0.1:{port}/", b"{}", {})
    finally:
        await p.aclose()


async def test_the_guard_refuses_an_internal_receiver_unless_allowed() -> None:
    async with serving(lambda c, n: OK) as server:
        p = poster(policy=AddressPolicy())
        try:
            with pytest.raises(FetchError, match="loopback"):
                await p.post(server.url(), b"{}", {})
            with pytest.raises(FetchError, match="loopback"):
                await p.post(f"http://localhost:{server.port}/", b"{}", {})
        finally:
            await p.aclose()
    assert server.connections == 0


async def test_a_header_with_a_line_break_is_refused_before_sending() -> None:
    async with serving(lambda c, n: OK) as server:
        p = poster()
        try:
            with pytest.raises(PostError, match="line break"):
                await p.post(server.url(), b"{}", {"webhook-id": "a\r\nX-Injected: 1"})
        finally:
            await p.aclose()
    assert server.connections == 0


def _certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "receiver.pem", directory / "receiver.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
async def test_https_verifies_the_receiver_and_keeps_the_connection(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    async with serving(lambda c, n: OK, ssl_context=server_context) as server:
        trusting = poster(ssl_context=ssl.create_default_context(cafile=str(cert)))
        try:
            assert [await trusting.post(server.url(scheme="https"), b"{}", {}) for _ in range(3)] == [200] * 3
        finally:
            await trusting.aclose()
        assert trusting.connections_made == 1
        default = poster()  # the public CAs: the test's certificate is not among them
        try:
            with pytest.raises(PostError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
                await default.post(server.url(scheme="https"), b"{}", {})
        finally:
            await default.aclose()
    assert [s.body for s in server.seen] == [b"{}"] * 3
