"""SSRF guard: URL validation, the address policy, and an httpx transport that only connects to checked addresses."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import httpcore
import httpx

from mediacache.domain import ErrorKind
from mediacache.errors import FetchError, InvalidURLError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# host, port -> every address the name resolves to. Injectable so tests can play DNS tricks.
Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]

MAX_URL_LENGTH = 4096
_ALLOWED_SCHEMES = ("http", "https")

# Control characters, C1 controls, any whitespace and backslashes. Parsers disagree about all of
# them (WHATWG strips tabs and newlines and reads `\` as `/`; httpx does neither), and a URL that
# two parsers read differently is how a checked URL turns into an unchecked request.
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x20\x7f-\x9f\\\s]")
_AUTHORITY_END = re.compile(r"[/?#]")
# A DNS name after IDNA encoding. `_` is not valid in host names but real CDNs use it in labels.
_HOSTNAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?")
_MAX_HOSTNAME_LENGTH = 253
_MAX_LABEL_LENGTH = 63

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_OCT_DIGITS = frozenset("01234567")
_DEC_DIGITS = frozenset("0123456789")


# ---- URL validation ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ValidURL:
    """A URL that passed validate_url: the string as given, and the parts that decide where it goes."""

    url: str           # exactly as given
    scheme: str        # "http" or "https"
    host: str          # lower case, IDNA-encoded (xn--...) for international names, IPv6 without brackets
    port: int | None   # None means the scheme's default

    def __str__(self) -> str:
        return self.url

    def to_httpx(self) -> httpx.URL:
        return httpx.URL(self.url)


def validate_url(url: str, *, max_length: int = MAX_URL_LENGTH) -> ValidURL:
    """The URL's parts when it may be downloaded; raises InvalidURLError naming the reason otherwise.

    Checks syntax only, cheaply enough for every enqueue: http(s), a host, no credentials, no control
    characters, whitespace or backslashes, no numeric host in a non-canonical spelling. Whether the
    host's addresses may be contacted is decided at connect time by the guarded transport.
    """
    if not isinstance(url, str):
        raise InvalidURLError(repr(url), f"a URL must be a string, not {type(url).__name__}")
    if not url:
        raise InvalidURLError(url, "the URL is empty")
    if len(url) > max_length:
        raise InvalidURLError(url, f"the URL is {len(url)} characters long, over the limit of {max_length}")
    bad = _FORBIDDEN_CHARS.search(url)
    if bad is not None:
        raise InvalidURLError(
            url, f"the URL contains {bad.group()!r} at position {bad.start()}; "
                 "percent-encode spaces and control characters, and use / instead of \\")
    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in _ALLOWED_SCHEMES:
        shown = repr(scheme) if separator else "missing"
        raise InvalidURLError(url, f"the scheme is {shown}; only http:// and https:// URLs can be cached")
    # Only the authority decides where a request goes, so only it is parsed (by httpx, the parser
    # that will make the request). Parsing the whole URL costs ~40 ns per character, and signed
    # links run to thousands; for an absolute URL httpx refuses nothing outside the authority
    # except the control characters refused above.
    end = _AUTHORITY_END.search(rest)
    authority = rest if end is None else rest[:end.start()]
    if "@" in authority:
        # Also `http://@host/` and `http://a@b@host/`, whose userinfo parsers split differently.
        raise InvalidURLError(url, "the URL carries credentials (user:password@); remove them")
    try:
        parsed = httpx.URL(f"{scheme}://{authority}/")
    except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
        raise InvalidURLError(url, f"httpx cannot parse its host and port: {exc}") from exc
    host = parsed.raw_host.decode("ascii", "replace").lower()
    _check_host(url, host)
    port = parsed.port
    if port is not None and not 1 <= port <= 65535:
        raise InvalidURLError(url, f"port {port} is out of range (1-65535)")
    return ValidURL(url=url, scheme=scheme, host=host, port=port)


def _check_host(url: str, host: str) -> None:
    if not host:
        raise InvalidURLError(url, "the URL has no host")
    if ":" in host:  # httpx only lets a bracketed IPv6 literal get here with a colon in it
        if "%" in host:
            # A zone id names a local interface: only meaningful for link-local, which is never fetched.
            raise InvalidURLError(url, f"the IPv6 host {host!r} has a zone id (%...); zone ids are not allowed")
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise InvalidURLError(url, f"the host {host!r} is not a valid IPv6 address") from exc
        return
    if len(host.rstrip(".")) > _MAX_HOSTNAME_LENGTH or _HOSTNAME.fullmatch(host) is None:
        raise InvalidURLError(url, f"the host {host!r} is not a valid DNS name or IP address")
    if any(len(label) > _MAX_LABEL_LENGTH for label in host.split(".")):
        raise InvalidURLError(url, f"the host {host!r} has a label longer than {_MAX_LABEL_LENGTH} characters")
    if _ends_in_number(host):
        # Browsers and C resolvers read `2130706433`, `0x7f.1`, `0177.0.0.1` and `127.1` as IPv4
        # addresses. No real media link is written that way, and only the canonical dotted quad
        # reads the same everywhere, so every other spelling is refused here. (The transport would
        # block such a host anyway if its address is not public.)
        value = _whatwg_ipv4(host)
        if value is None:
            raise InvalidURLError(url, f"the host {host!r} looks numeric but is not a valid IPv4 address")
        canonical = str(ipaddress.IPv4Address(value))
        if host != canonical:
            raise InvalidURLError(
                url, f"the host {host!r} is a non-canonical spelling of the IPv4 address {canonical}; "
                     f"write it as {canonical}")


def check_redirect(from_url: httpx.URL | str, location: str, *, max_length: int = MAX_URL_LENGTH) -> httpx.URL:
    """The absolute target of a redirect, validated like validate_url; raises FetchError if refused.

    A redirect to another scheme (file:, gopher:, ...) is `blocked`; any other bad target is
    `invalid_url`. The target's addresses are checked again by the transport when it connects.
    """
    base = httpx.URL(from_url) if isinstance(from_url, str) else from_url
    bad = _FORBIDDEN_CHARS.search(location)
    if bad is not None:
        raise FetchError(ErrorKind.INVALID_URL,
                         f"{base} redirects to {location[:200]!r}, which contains {bad.group()!r}")
    try:
        target = base.join(location)
    except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
        raise FetchError(ErrorKind.INVALID_URL,
                         f"{base} redirects to {location[:200]!r}, which cannot be parsed: {exc}") from exc
    if target.scheme not in _ALLOWED_SCHEMES:
        raise FetchError(ErrorKind.BLOCKED,
                         f"{base} redirects to {str(target)[:200]!r}; only http:// and https:// are followed")
    try:
        validate_url(str(target), max_length=max_length)
    except InvalidURLError as exc:
        raise FetchError(ErrorKind.INVALID_URL, f"{base} redirects to a refused URL: {exc.reason}") from exc
    return target


# ---- numeric hosts -------------------------------------------------------------------------


def host_address(host: str) -> IPAddress | None:
    """The IP address `host` denotes when it is an address literal in any spelling, else None.

    Understands bracketed or bare IPv6 (zone ids included) and every IPv4 spelling that the WHATWG
    URL standard and C's inet_aton accept: `127.0.0.1`, `2130706433`, `0x7f000001`, `0177.0.0.1`,
    `127.1`, `0x7f.1`, with or without one trailing dot.
    """
    if host.startswith("["):
        if not host.endswith("]"):
            return None
        host = host[1:-1]
    host = host.lower()
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            return None
    if not host or not _ends_in_number(host):
        return None
    value = _whatwg_ipv4(host)
    return None if value is None else ipaddress.IPv4Address(value)


def _ends_in_number(host: str) -> bool:
    """WHATWG URL "ends in a number": such a host is parsed as IPv4 by browsers, or refused."""
    parts = host.split(".")
    if parts[-1] == "":
        if len(parts) == 1:
            return False
        parts.pop()
    last = parts[-1]
    if last and all(c in _DEC_DIGITS for c in last):
        return True
    return _ipv4_number(last) is not None


def _ipv4_number(part: str) -> int | None:
    """One dot-separated part of a WHATWG IPv4 host: decimal, 0x-hex or 0-prefixed octal."""
    if not part:
        return None
    digits, allowed, radix = part, _DEC_DIGITS, 10
    if len(part) >= 2 and part[0] == "0" and part[1] in "xX":
        digits, allowed, radix = part[2:], _HEX_DIGITS, 16
    elif len(part) >= 2 and part[0] == "0":
        digits, allowed, radix = part[1:], _OCT_DIGITS, 8
    if not digits:
        return 0
    # int() alone would also take signs, underscores and surrounding spaces.
    if not all(c in allowed for c in digits):
        return None
    return int(digits, radix)


def _whatwg_ipv4(host: str) -> int | None:
    """The 32-bit value of a numeric host per the WHATWG IPv4 parser, or None when it is invalid."""
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    if len(parts) > 4:
        return None
    numbers = []
    for part in parts:
        number = _ipv4_number(part)
        if number is None:
            return None
        numbers.append(number)
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        return None
    value = numbers[-1]
    for index, number in enumerate(numbers[:-1]):
        value += number * 256 ** (3 - index)
    return value


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
        addresses = [literal] if literal is not None else await self._resolved(host, port, timeout_s)
        # Every answer is checked, not just the one we would use: a name that resolves to a public
        # and a private address is refused, so mixed answers cannot be used to sneak inside.
        for address in addresses:
            reason = self.policy.blocked_reason(address)
            if reason is not None:
                what = f"{address} is" if literal is not None else f"it resolves to {address}, which is"
                where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                raise FetchError(ErrorKind.BLOCKED,
                                 f"refused to connect to {where}: {what} {reason}. Downloads only go to "
                                 "public addresses; add a range to MEDIACACHE_ALLOWED_NETWORKS to open it")
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
