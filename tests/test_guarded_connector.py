"""The SSRF guard on aiohttp (the downloads' client): real connections, scripted DNS, literals, TLS, proxies."""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from mediacache.domain import ErrorKind
from mediacache.errors import FetchError
from mediacache.fetching.fetch import Fetcher
from mediacache.fetching.guarded_connector import GuardedResolver, GuardedSocketFactory, guarded_connector
from mediacache.fetching.netguard import AddressPolicy, Resolver
from mediacache.fetching.urls import IPAddress
from mediacache.settings import load_settings
from tests.support.guard_servers import (
    ALLOW_ORIGIN,
    CANARY_HOSTS,
    FakeDNS,
    TinyServer,
    origin_and_canary,
    tls_origin,
)


@pytest.fixture
async def servers() -> AsyncIterator[tuple[TinyServer, TinyServer]]:
    """An origin on 127.0.0.2:P and a canary that nobody may reach on 127.0.0.1:P and [::1]:P."""
    async with origin_and_canary() as pair:
        yield pair


def _session(policy: AddressPolicy = ALLOW_ORIGIN, *, resolver: Resolver | None = None, connect_timeout_s: float = 2.0,
             **connector: object) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=guarded_connector(policy, resolver=resolver, **connector),  # type: ignore[arg-type]
        timeout=aiohttp.ClientTimeout(connect=connect_timeout_s, sock_read=5.0))


async def _get(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url, allow_redirects=False) as response:
        return await response.read()


async def test_fetches_the_allowed_origin_and_never_reaches_the_canary(
        servers: tuple[TinyServer, TinyServer]) -> None:
    origin, canary = servers
    async with _session() as session:
        assert await _get(session, f"http://127.0.0.2:{origin.port}/ok.jpg") == b"origin"
        for host in CANARY_HOSTS:
            # Names and literals alike: refused by our guard, or by aiohttp's own refusal of
            # non-canonical IPv4 spellings; either way before any socket connects.
            with pytest.raises((FetchError, aiohttp.InvalidURL)) as info:
                await _get(session, f"http://{host}:{canary.port}/secret")
            assert not isinstance(info.value, FetchError) or info.value.kind is ErrorKind.BLOCKED, host
    assert canary.connections == 0 and canary.requests == []
    assert origin.requests == [(f"127.0.0.2:{origin.port}", "/ok.jpg")]


def test_the_socket_factory_refuses_blocked_addresses_before_making_a_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[object] = []
    real_socket = socket.socket
    monkeypatch.setattr(socket, "socket", lambda *a, **k: made.append((a, k)) or real_socket(*a, **k))
    factory = GuardedSocketFactory(ALLOW_ORIGIN)
    for family, address in [(socket.AF_INET, ("127.0.0.1", 80)), (socket.AF_INET, ("169.254.169.254", 80)),
                            (socket.AF_INET6, ("::1", 80, 0, 0)), (socket.AF_INET6, ("fe80::1%lo", 80, 0, 1)),
                            (socket.AF_INET6, ("::ffff:127.0.0.1", 80, 0, 0))]:
        with pytest.raises(FetchError) as info:
            factory((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address))
        assert info.value.kind is ErrorKind.BLOCKED, address
    assert made == []
    sock = factory((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.2", 80)))
    sock.close()
    assert len(made) == 1


async def test_connects_to_the_checked_address_and_keeps_the_host_name(
        servers: tuple[TinyServer, TinyServer]) -> None:
    origin, canary = servers
    dns = FakeDNS({"media.test": [["127.0.0.2"]]})
    async with _session(resolver=dns) as session:
        for n in range(5):
            assert await _get(session, f"http://media.test:{origin.port}/{n}.jpg") == b"origin"
    assert origin.requests[0] == (f"media.test:{origin.port}", "/0.jpg")
    # Keep-alive works through the guard: one lookup, one connection, five requests.
    assert dns.lookups == ["media.test"] and origin.connections == 1 and len(origin.requests) == 5
    assert canary.connections == 0


async def test_dns_rebinding_cannot_switch_to_a_blocked_address(servers: tuple[TinyServer, TinyServer]) -> None:
    origin, canary = servers
    origin.close_each = True  # every request needs a new connection
    # First the allowed address, then the attacker's DNS flips to loopback (where the canary listens).
    answers = {"rebind.test": [["127.0.0.2"], ["127.0.0.1"]]}
    # With aiohttp's cache, the second connection reuses the checked answer and never asks again.
    dns = FakeDNS({k: list(v) for k, v in answers.items()})
    async with _session(resolver=dns) as session:
        assert await _get(session, f"http://rebind.test:{origin.port}/a") == b"origin"
        assert await _get(session, f"http://rebind.test:{origin.port}/b") == b"origin"
    assert dns.lookups == ["rebind.test"]
    # Without the cache the flipped answer is read, and refused.
    dns = FakeDNS({k: list(v) for k, v in answers.items()})
    async with _session(resolver=dns, dns_cache_ttl_s=0) as session:
        assert await _get(session, f"http://rebind.test:{origin.port}/c") == b"origin"
        with pytest.raises(FetchError) as info:
            await _get(session, f"http://rebind.test:{origin.port}/d")
    assert info.value.kind is ErrorKind.BLOCKED and "127.0.0.1" in str(info.value)
    assert dns.lookups == ["rebind.test", "rebind.test"] and canary.connections == 0


async def test_mixed_answers_are_refused_outright(servers: tuple[TinyServer, TinyServer]) -> None:
    origin, canary = servers
    dns = FakeDNS({"mixed.test": [["127.0.0.2", "127.0.0.1"]], "mixed6.test": [["127.0.0.2", "::1"]]})
    async with _session(resolver=dns) as session:
        for host in ("mixed.test", "mixed6.test"):
            with pytest.raises(FetchError) as info:
                await _get(session, f"http://{host}:{origin.port}/")
            assert info.value.kind is ErrorKind.BLOCKED
    assert origin.connections == 0 and canary.connections == 0


async def test_localhost_names_are_loopback_whatever_dns_says(servers: tuple[TinyServer, TinyServer]) -> None:
    _origin, canary = servers
    # A DNS that would answer with the allowed address: the name alone decides.
    dns = FakeDNS({name: [["127.0.0.2"]] for name in ("localhost", "LOCALHOST.", "a.localhost")})
    async with _session(resolver=dns) as session:
        for name in ("localhost", "LOCALHOST.", "a.localhost"):
            with pytest.raises(FetchError) as info:
                await _get(session, f"http://{name}:{canary.port}/")
            assert info.value.kind is ErrorKind.BLOCKED, name
    assert dns.lookups == [] and canary.connections == 0


async def test_falls_back_to_the_next_checked_address(servers: tuple[TinyServer, TinyServer]) -> None:
    origin, _canary = servers
    # 127.0.0.3 has no listener (connection refused); the second address answers.
    dns = FakeDNS({"multi.test": [["127.0.0.3", "127.0.0.2"]]})
    policy = AddressPolicy([ipaddress.ip_network("127.0.0.2/31")])
    async with _session(policy, resolver=dns, connect_timeout_s=5.0) as session:
        assert await _get(session, f"http://multi.test:{origin.port}/") == b"origin"


async def test_resolution_failures_and_timeouts_are_connect_errors() -> None:
    never = asyncio.Event()

    async def hanging(host: str, port: int) -> list[IPAddress]:
        await never.wait()
        return []

    async def empty(host: str, port: int) -> list[IPAddress]:
        return []

    async def idna(host: str, port: int) -> list[IPAddress]:
        raise UnicodeError("label empty or too long")

    for resolver, pattern in ((FakeDNS({}), "Name or service not known"), (empty, "no addresses"),
                              (idna, "label empty")):
        async with _session(AddressPolicy(), resolver=resolver) as session:
            with pytest.raises(aiohttp.ClientConnectorDNSError, match=pattern):
                await _get(session, "http://nxdomain.test/")
    started = time.monotonic()
    async with _session(AddressPolicy(), resolver=hanging, connect_timeout_s=0.2) as session:
        with pytest.raises(aiohttp.ConnectionTimeoutError):
            await _get(session, "http://slow-dns.test/")
    assert time.monotonic() - started < 5


async def test_the_resolver_answers_only_the_family_asked_for() -> None:
    dns = FakeDNS({"both.test": [["127.0.0.2", "2001:db8::1"]]})
    resolver = GuardedResolver(AddressPolicy(["127.0.0.2/32", "2001:db8::/32"]), dns)
    assert [r["host"] for r in await resolver.resolve("both.test", 80)] == ["127.0.0.2", "2001:db8::1"]
    assert [r["host"] for r in await resolver.resolve("both.test", 80, socket.AF_INET6)] == ["2001:db8::1"]
    assert [r["family"] for r in await resolver.resolve("both.test", 80, socket.AF_INET)] == [socket.AF_INET]


async def test_environment_proxies_do_not_bypass_the_fetcher(
        servers: tuple[TinyServer, TinyServer], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    origin, canary = servers
    # A "proxy" on the canary: if the client used it, the canary would see the request.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{canary.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    fetcher = Fetcher(load_settings(env_file=None, allowed_networks="127.0.0.2/32", data_dir=tmp_path))
    try:
        with pytest.raises(FetchError) as info:  # TinyServer answers text/plain: not media
            async with fetcher.open(f"http://127.0.0.2:{origin.port}/a.jpg") as download:
                await download.media_body(["image/*"])
        assert info.value.kind is ErrorKind.UNSUPPORTED_TYPE
    finally:
        await fetcher.close()
    assert canary.connections == 0 and len(origin.requests) == 1


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
async def test_tls_verifies_the_url_host_name_not_the_address(tmp_path: Path) -> None:
    async with tls_origin(tmp_path, "media.test", "127.0.0.2") as (origin, client_context):
        dns = FakeDNS({"media.test": [["127.0.0.2"]], "other.test": [["127.0.0.2"]]})
        async with _session(resolver=dns, ssl_context=client_context) as session:
            # The socket goes to 127.0.0.2, yet the certificate is checked against media.test.
            assert await _get(session, f"https://media.test:{origin.port}/a.jpg") == b"origin"
            for wrong in ("other.test", "127.0.0.2"):
                with pytest.raises(aiohttp.ClientConnectorCertificateError):
                    await _get(session, f"https://{wrong}:{origin.port}/a.jpg")
