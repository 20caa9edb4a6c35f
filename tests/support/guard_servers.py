"""Servers and a scripted DNS for the SSRF guard's tests: an origin, a canary nobody may reach, certificates."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mediacache.fetching.netguard import AddressPolicy
from mediacache.fetching.urls import IPAddress


@dataclass
class TinyServer:
    """An HTTP/1.1 server with keep-alive that answers every GET with 200 and counts what it saw."""

    host: str
    port: int = 0
    body: bytes = b"origin"
    close_each: bool = False
    connections: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)  # (Host header, path)
    servers: list[asyncio.Server] = field(default_factory=list)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self, *, ssl_context: ssl.SSLContext | None = None, extra_hosts: Sequence[str] = ()) -> None:
        server = await asyncio.start_server(self._handle, self.host, self.port, ssl=ssl_context)
        self.port = server.sockets[0].getsockname()[1]
        self.servers.append(server)
        for host in extra_hosts:
            self.servers.append(await asyncio.start_server(self._handle, host, self.port, ssl=ssl_context))

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        for writer in list(self._writers):
            writer.close()
        for server in self.servers:
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
                self.requests.append((headers.get("Host", headers.get("host", "")), lines[0].split(" ")[1]))
                closing = "Connection: close\r\n" if self.close_each else ""
                writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(self.body)}\r\n"
                             f"{closing}\r\n".encode() + self.body)
                await writer.drain()
                if self.close_each:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


IPV6 = ipv6_loopback_available()


@asynccontextmanager
async def origin_and_canary() -> AsyncIterator[tuple[TinyServer, TinyServer]]:
    """An origin on 127.0.0.2:P and a canary that nobody may reach on 127.0.0.1:P and [::1]:P.

    One port for both, so a request that lands on any wrong loopback address meets the canary.
    """
    for _attempt in range(20):
        origin = TinyServer("127.0.0.2")
        await origin.start()
        canary = TinyServer("127.0.0.1", port=origin.port, body=b"canary")
        try:
            await canary.start(extra_hosts=["::1"] if IPV6 else [])
            break
        except OSError:  # the port is taken on 127.0.0.1 or ::1: try another one
            await canary.close()
            await origin.close()
    else:
        raise RuntimeError("no port free on 127.0.0.2, 127.0.0.1 and ::1 at once")
    try:
        yield origin, canary
    finally:
        await origin.close()
        await canary.close()


ALLOW_ORIGIN = AddressPolicy([ipaddress.ip_network("127.0.0.2/32")])
CANARY_HOSTS = ["127.0.0.1", "localhost", "2130706433", "0x7f000001", "127.1", "0x7f.1", "127.0.0.1.",
                "[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[::127.0.0.1]", "[64:ff9b::7f00:1]",
                "[2002:7f00:1::1]"]


class FakeDNS:
    """A resolver whose answers a test scripts; counts lookups."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.lookups.append(host)
        script = self.answers.get(host)
        if not script:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answer = script.pop(0) if len(script) > 1 else script[0]
        return [ipaddress.ip_address(a) for a in answer]


def make_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "1", "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return cert, key


@asynccontextmanager
async def tls_origin(directory: Path, name: str, host: str) -> AsyncIterator[tuple[TinyServer, ssl.SSLContext]]:
    """A TinyServer on `host` speaking TLS with a certificate for `name`, and a client context that
    trusts that certificate (and only it)."""
    cert, key = make_certificate(directory, name)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    origin = TinyServer(host)
    await origin.start(ssl_context=server_context)
    try:
        yield origin, ssl.create_default_context(cafile=str(cert))
    finally:
        await origin.close()
