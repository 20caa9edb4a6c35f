"""URL checks before anything is written or fetched: scheme, host, credentials, numeric host spellings."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import httpx

from mediacache.domain import ErrorKind
from mediacache.errors import FetchError, InvalidURLError, shown_url

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

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
    characters, whitespace, backslashes or lone surrogates, no numeric host in a non-canonical spelling. Whether the
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
    if not url.isascii():
        try:
            url.encode("utf-8")
        except UnicodeEncodeError as exc:
            # A lone surrogate (from JSON's "\\ud800", say) is no character: no database stores it.
            raise InvalidURLError(
                url, f"the URL contains the lone surrogate {url[exc.start]!r} at position {exc.start}, "
                     "which is not text; percent-encode the bytes meant") from exc
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
                         f"{base} redirects to {shown_url(location)!r}, which contains {bad.group()!r}")
    try:
        target = base.join(location)
    except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
        raise FetchError(ErrorKind.INVALID_URL,
                         f"{base} redirects to {shown_url(location)!r}, which cannot be parsed: {exc}") from exc
    if target.scheme not in _ALLOWED_SCHEMES:
        raise FetchError(ErrorKind.BLOCKED,
                         f"{base} redirects to {shown_url(str(target))!r}; only http:// and https:// are followed")
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
