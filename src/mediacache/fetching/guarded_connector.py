"""SSRF guard for aiohttp: a resolver and a socket factory that only let checked addresses through."""

from __future__ import annotations

import ipaddress
import socket
import ssl
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from mediacache.fetching.netguard import (
    LOOPBACK,
    AddressPolicy,
    Resolver,
    is_localhost_name,
    refuse_blocked,
    system_resolver,
)
from mediacache.fetching.urls import IPAddress, host_address

AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]


class GuardedResolver(AbstractResolver):
    """Resolves a name once and refuses it when any of its addresses is blocked.

    aiohttp connects to exactly the addresses a resolver returns (and caches them), never to the
    name again, which is what defeats DNS rebinding: only checked addresses ever reach a socket.
    """

    def __init__(self, policy: AddressPolicy, resolver: Resolver | None = None) -> None:
        self.policy = policy
        self._resolve = resolver or system_resolver

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_UNSPEC) -> list[ResolveResult]:
        literal = host_address(host)
        if literal is not None:
            # A numeric spelling aiohttp did not take for an address (`127.0.0.1.`, `0x7f000001`):
            # the C resolver would read it as one, so it is judged as that address, without DNS.
            addresses: list[IPAddress] = [literal]
        elif is_localhost_name(host):
            # RFC 6761: localhost names are loopback, whatever DNS says (see netguard.py).
            addresses = list(LOOPBACK)
        else:
            try:
                addresses = list(dict.fromkeys(await self._resolve(host, port)))
            except UnicodeError as exc:  # IDNA refused the name: aiohttp reports OSErrors as DNS failures
                raise socket.gaierror(socket.EAI_NONAME, f"IDNA refused the name: {exc}") from exc
        refuse_blocked(self.policy, host, port, addresses, literal=literal is not None)
        wanted = {socket.AF_INET: 4, socket.AF_INET6: 6}.get(family)
        results: list[ResolveResult] = [
            {"hostname": host, "host": str(address), "port": port,
             "family": socket.AF_INET6 if address.version == 6 else socket.AF_INET,
             "proto": 0, "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV}
            for address in addresses if wanted is None or address.version == wanted]
        if not results:
            raise socket.gaierror(socket.EAI_NODATA, "no addresses")
        return results

    async def close(self) -> None:
        return None


class GuardedSocketFactory:
    """aiohttp's socket factory, checking the very address each socket is about to connect to.

    aiohttp hands address literals (`http://10.0.0.1/`) straight to the socket, past any
    resolver, and this is the one place every connection passes: nothing unchecked is connected.
    """

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy

    def __call__(self, addr_info: AddrInfo) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        host, port = str(sockaddr[0]), int(sockaddr[1])
        refuse_blocked(self.policy, host, port, [ipaddress.ip_address(host.partition("%")[0])], literal=True)
        return socket.socket(family=family, type=type_, proto=proto)


def guarded_connector(policy: AddressPolicy, *, limit: int = 100, resolver: Resolver | None = None,
                      ssl_context: ssl.SSLContext | None = None, dns_cache_ttl_s: int = 10,
                      ) -> aiohttp.TCPConnector:
    """A TCPConnector that refuses blocked addresses, whether a URL names them or DNS answers them.

    `ssl_context` replaces the default one (system trust store, host names checked), as tests need.
    Only checked answers are cached, for `dns_cache_ttl_s` (0: every connection resolves again).
    """
    return aiohttp.TCPConnector(limit=limit, limit_per_host=0, resolver=GuardedResolver(policy, resolver),
                                socket_factory=GuardedSocketFactory(policy),
                                use_dns_cache=dns_cache_ttl_s > 0, ttl_dns_cache=dns_cache_ttl_s or None,
                                ssl=True if ssl_context is None else ssl_context)
