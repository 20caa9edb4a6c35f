"""SSRF guard: the address policy, and an httpx transport that only connects to checked addresses."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import anyio
import httpcore
import httpx

from mediacache.domain import ErrorKind
from mediacache.errors import FetchError
from mediacache.fetching.urls import IPAddress, IPNetwork, host_address

# host, port -> every address the name resolves to. Injectable so tests can play DNS tricks.
Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]


# ---- the address policy --------------------------------------------------------------------


def _nets(*entries: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(cidr), reason) for cidr, reason in entries)


# IANA's special-purpose registries, plus known cloud-internal endpoints. First match names the
# reason, so narrower entries come before the ranges that contain them.
_BLOCKED_V4 = _nets(
    ("0.0.0.0/32", "unspecified"),
    ("0.0.0.0/8", "'this network' (0.0.0.0/8)"),
    ("10.0.0.0/8", "private (10.0.0.0/8)"),
    ("100.64.0.0/10", "carrier-grade NAT (100.64.0.0/10; Alibaba Cloud's metadata service lives here)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.169.254/32", "the cloud metadata service (link-local 169.254.169.254)"),
    ("169.254.0.0/16", "link-local (169.254.0.0/16)"),
    ("172.16.0.0/12", "private (172.16.0.0/12)"),
    ("192.0.0.0/24", "IETF protocol assignments (192.0.0.0/24)"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)"),
    ("192.88.99.0/24", "the deprecated 6to4 relay anycast range"),
    ("192.168.0.0/16", "private (192.168.0.0/16)"),
    ("198.18.0.0/15", "benchmarking (198.18.0.0/15)"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved (240.0.0.0/4)"),
    # A public-looking address that every Azure VM reaches: the platform's WireServer and DNS.
    ("168.63.129.16/32", "Azure's platform endpoint (WireServer)"),
)

_BLOCKED_V6 = _nets(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated, ::/96)"),
    ("64:ff9b:1::/48", "local-use IPv4/IPv6 translation (64:ff9b:1::/48)"),
    ("100::/64", "discard-only (100::/64)"),
    ("2001::/32", "Teredo (2001::/32)"),
    ("2001::/23", "IETF protocol assignments (2001::/23)"),
    ("2001:db8::/32", "documentation (2001:db8::/32)"),
    ("3fff::/20", "documentation (3fff::/20)"),
    ("5f00::/16", "SRv6 segment identifiers (5f00::/16)"),
    ("fc00::/7", "unique-local, the IPv6 private range (fc00::/7; AWS's IPv6 metadata service lives here)"),
    ("fe80::/10", "link-local (fe80::/10)"),
    ("fec0::/10", "site-local (deprecated, fec0::/10)"),
    ("ff00::/8", "multicast"),
)
# Only 2000::/3 is allocated for global unicast; everything else is reserved, so unknown means refused.
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
_NAT64_V6 = ipaddress.IPv6Network("64:ff9b::/96")
_SIXTOFOUR_V6 = ipaddress.IPv6Network("2002::/16")


class AddressPolicy:
    """Which IP addresses downloads may connect to: public unicast only, plus the allowed networks.

    An address inside an allowed network passes even when it would otherwise be blocked; that is
    how tests reach 127.0.0.2 and how an operator opens an internal CDN.
    """

    def __init__(self, allowed_networks: Iterable[IPNetwork | str] = ()) -> None:
        self.allowed_networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(net, strict=False) if isinstance(net, str) else net for net in allowed_networks)

    def __repr__(self) -> str:
        return f"AddressPolicy(allowed_networks={[str(n) for n in self.allowed_networks]})"

    def check(self, ip: IPAddress | str) -> None:
        """Returns when `ip` may be contacted; raises FetchError(blocked) naming the reason otherwise."""
        address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
        reason = self.blocked_reason(address)
        if reason is not None:
            raise FetchError(ErrorKind.BLOCKED,
                             f"refused to connect to {address}: it is {reason}. Downloads only go to public "
                             "addresses; add a range to MEDIACACHE_ALLOWED_NETWORKS to open it")

    def blocked_reason(self, ip: IPAddress) -> str | None:
        """Why `ip` must not be contacted, or None when it may be."""
        if self._allowed(ip):
            return None
        if isinstance(ip, ipaddress.IPv4Address):
            return _blocked_v4(ip)
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            form, inner = embedded
            # Mapped and NAT64 addresses reach exactly the embedded IPv4 host, so they get its verdict.
            # 6to4, Teredo and IPv4-compatible ones go through relays (or nowhere): an allowed
            # embedded address does not open them, a blocked one closes them.
            reaches_inner = form in ("an IPv4-mapped", "a NAT64")
            if reaches_inner and self._allowed(inner):
                return None
            inner_reason = _blocked_v4(inner)
            if inner_reason is not None:
                return f"{form} address embedding {inner}, which is {inner_reason}"
            if reaches_inner:
                return None
        for network, reason in _BLOCKED_V6:
            if ip in network:
                return reason
        if ip not in _GLOBAL_UNICAST_V6:
            return "reserved (outside the global unicast range 2000::/3)"
        return None

    def _allowed(self, ip: IPAddress) -> bool:
        return any(ip in network for network in self.allowed_networks if network.version == ip.version)


def _blocked_v4(ip: ipaddress.IPv4Address) -> str | None:
    for network, reason in _BLOCKED_V4:
        if ip in network:
            return reason
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address carries, with the form's name (mapped, NAT64, 6to4, Teredo)."""
    if ip.ipv4_mapped is not None:
        return "an IPv4-mapped", ip.ipv4_mapped
    if ip in _NAT64_V6:
        return "a NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _SIXTOFOUR_V6 and ip.sixtofour is not None:
        return "a 6to4", ip.sixtofour
    if ip.teredo is not None:
        return "a Teredo", ip.teredo[1]
    packed = int(ip)
    if packed >> 32 == 0 and packed > 1:
        return "an IPv4-compatible", ipaddress.IPv4Address(packed)
    return None


# ---- the connect-time guard ----------------------------------------------------------------


LOOPBACK = (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1"))


def is_localhost_name(host: str) -> bool:
    """True for `localhost` and its subdomains in any case, with or without the final dot."""
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


def refuse_blocked(policy: AddressPolicy, host: str, port: int, addresses: Iterable[IPAddress], *,
                   literal: bool) -> None:
    """Raises FetchError(blocked) when any of `addresses` may not be contacted, naming the first such.

    Every answer is checked, not just the one a client would use: a name that resolves to a public
    and a private address is refused, so mixed answers cannot be used to sneak inside.
    """
    for address in addresses:
        reason = policy.blocked_reason(address)
        if reason is not None:
            what = f"{address} is" if literal else f"it resolves to {address}, which is"
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise FetchError(ErrorKind.BLOCKED,
                             f"refused to connect to {where}: {what} {reason}. Downloads only go to "
                             "public addresses; add a range to MEDIACACHE_ALLOWED_NETWORKS to open it")


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address the system resolver gives for `host`, in its preference order."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [ipaddress.ip_address(info[4][0]) for info in infos]


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """An httpcore backend that resolves each host once, checks every address, and connects to the checked one.

    Connecting to the address that was checked (never to the name again) is what defeats DNS
    rebinding: a second lookup could answer differently. TLS still verifies the URL's host name,
    because httpcore passes the origin's host as server_hostname to start_tls.
    """

    def __init__(self, policy: AddressPolicy, *, connect_timeout_s: float | None = None,
                 resolver: Resolver | None = None, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.policy = policy
        self.connect_timeout_s = connect_timeout_s
        self._resolve: Resolver = resolver or system_resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109 - httpcore API
                          local_address: str | None = None,
                          socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        timeout_s = _min_timeout(timeout, self.connect_timeout_s)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        literal = host_address(host)
        if literal is None and is_localhost_name(host):
            # RFC 6761: localhost names are loopback, whatever DNS says. Resolvers disagree about
            # spellings such as `LOCALHOST.` (here it failed to resolve and was retried as
            # transient), so every spelling is mapped to loopback and judged by the policy.
            addresses: list[IPAddress] = list(LOOPBACK)
        elif literal is not None:
            addresses = [literal]
        else:
            addresses = await self._resolved(host, port, timeout_s)
        refuse_blocked(self.policy, host, port, addresses, literal=literal is not None)
        options = list(socket_options) if socket_options is not None else None
        errors: list[Exception] = []
        for index, address in enumerate(addresses):
            attempt_timeout_s = None
            if deadline is not None:
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0:
                    break
                # Share what is left among the addresses still to try, so one black-holed address
                # cannot use up the whole connect timeout.
                attempt_timeout_s = remaining_s / (len(addresses) - index)
            try:
                return await self._inner.connect_tcp(str(address), port, timeout=attempt_timeout_s,
                                                     local_address=local_address, socket_options=options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                errors.append(exc)
        tried = ", ".join(str(a) for a in addresses)
        detail = "; ".join(f"{type(e).__name__}: {e}" for e in errors) or "no time left"
        cls = httpcore.ConnectTimeout if all(isinstance(e, httpcore.ConnectTimeout) for e in errors) \
            else httpcore.ConnectError
        raise cls(f"cannot connect to {host}:{port} at {tried}: {detail}")

    async def _resolved(self, host: str, port: int, timeout_s: float | None) -> list[IPAddress]:
        try:
            with anyio.fail_after(timeout_s):
                resolved = await self._resolve(host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} took longer than {timeout_s} s") from exc
        except (OSError, UnicodeError) as exc:  # gaierror: no such name; UnicodeError: IDNA refused it
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = _interleave_families(list(dict.fromkeys(resolved)))
        if not addresses:
            raise httpcore.ConnectError(f"cannot resolve {host}: no addresses")
        return addresses

    async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109 - httpcore API
                                  socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:
        raise FetchError(ErrorKind.BLOCKED, f"refused to connect to the unix socket {path}: downloads use TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _min_timeout(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _interleave_families(addresses: list[IPAddress]) -> list[IPAddress]:
    """Alternates IPv6 and IPv4 (RFC 8305 section 4), keeping the resolver's order within each.

    When one family is broken on this host, the next attempt is already in the other one.
    """
    if len({a.version for a in addresses}) < 2:
        return addresses
    first = addresses[0].version
    primary = [a for a in addresses if a.version == first]
    secondary = [a for a in addresses if a.version != first]
    merged: list[IPAddress] = []
    for index in range(max(len(primary), len(secondary))):
        merged.extend(group[index] for group in (primary, secondary) if index < len(group))
    return merged


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (pooling and keep-alive included) on top of GuardedNetworkBackend."""

    def __init__(self, policy: AddressPolicy, *, connect_timeout_s: float | None = None,
                 limits: httpx.Limits | None = None, verify: ssl.SSLContext | bool = True,
                 http2: bool = False, retries: int = 0, resolver: Resolver | None = None) -> None:
        # httpx has no public way to give its transport an httpcore network backend, so this builds
        # the pool exactly as AsyncHTTPTransport.__init__ does (no proxy: an environment proxy would
        # make the connection to the proxy, not the checked address), adding network_backend.
        # handle_async_request, aclose and the context manager come from httpx and use self._pool.
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        self.backend = GuardedNetworkBackend(policy, connect_timeout_s=connect_timeout_s, resolver=resolver)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True, http2=http2, retries=retries,
            network_backend=self.backend,
        )


def guarded_transport(policy: AddressPolicy, *, connect_timeout_s: float | None = None,
                      limits: httpx.Limits | None = None, verify: ssl.SSLContext | bool = True,
                      http2: bool = False, retries: int = 0, resolver: Resolver | None = None,
                      ) -> httpx.AsyncHTTPTransport:
    """An httpx transport that refuses blocked addresses at connect time (give it to AsyncClient).

    Pass `limits` here: httpx ignores the client's own `limits` once a transport is given.
    `connect_timeout_s` bounds resolving plus connecting even when a request sets no connect
    timeout; the request's own connect timeout applies when it is shorter.
    """
    return GuardedTransport(policy, connect_timeout_s=connect_timeout_s, limits=limits, verify=verify,
                            http2=http2, retries=retries, resolver=resolver)


def guarded_client(policy: AddressPolicy, **client_options: Any) -> httpx.AsyncClient:
    """An AsyncClient on a guarded transport that never follows redirects or reads proxy settings."""
    transport_options = {key: client_options.pop(key) for key in
                         ("connect_timeout_s", "limits", "verify", "http2", "retries", "resolver")
                         if key in client_options}
    return httpx.AsyncClient(transport=guarded_transport(policy, **transport_options),
                             follow_redirects=False, trust_env=False, **client_options)
