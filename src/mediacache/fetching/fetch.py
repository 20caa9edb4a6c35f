"""Streaming download with limits; turns aiohttp errors and HTTP statuses into FetchError kinds."""

from __future__ import annotations

import email.utils
import time
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC

import aiohttp
import httpx
import yarl
from multidict import CIMultiDictProxy

from mediacache.domain import ErrorKind, bytes_and_human
from mediacache.errors import FetchError, InvalidURLError, shown_url
from mediacache.fetching.expiry import is_expired
from mediacache.fetching.guarded_connector import guarded_connector
from mediacache.fetching.netguard import AddressPolicy
from mediacache.fetching.sniff import SNIFF_HEAD_BYTES, is_allowed, sniff_content_type
from mediacache.fetching.urls import check_redirect, validate_url
from mediacache.settings import Settings

MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset((301, 302, 303, 307, 308))
# Reads of at most this much: a bounded piece of the body in memory at a time.
_READ_BYTES = 64 * 1024
USER_AGENT = "mediacache/0.1 (+https://github.com/mediacache)"


@dataclass
class Download:
    """An open response whose body has not been read yet."""

    url: str
    response: aiohttp.ClientResponse
    max_bytes: int

    @property
    def declared_type(self) -> str | None:
        value = self.response.headers.get("content-type")
        return value.split(";", 1)[0].strip().lower() or None if value else None

    @property
    def content_length(self) -> int | None:
        value = self.response.headers.get("content-length")
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    async def media_body(self, allowed_types: list[str]) -> tuple[str, AsyncIterator[bytes]]:
        """The sniffed media type and the whole body; refuses what is not allowed media.

        The type comes from the first bytes, not from Content-Type: an error page served with
        200 (HTML, JSON) is refused, and the stored type is the real one.
        """
        chunks = self.chunks()
        head: list[bytes] = []
        head_bytes = 0
        async for chunk in chunks:
            head.append(chunk)
            head_bytes += len(chunk)
            if head_bytes >= SNIFF_HEAD_BYTES:
                break
        first = b"".join(head)
        sniffed = sniff_content_type(first[:SNIFF_HEAD_BYTES])
        if sniffed is None or not is_allowed(sniffed, allowed_types):
            await chunks.aclose()
            what = f"{sniffed}" if sniffed else "not image, video or audio data"
            raise FetchError(ErrorKind.UNSUPPORTED_TYPE,
                             f"{self.url} sent {what} (declared {self.declared_type or 'no type'}); "
                             f"allowed: {', '.join(allowed_types)} (MEDIACACHE_ALLOWED_TYPES)")

        async def body() -> AsyncIterator[bytes]:
            yield first
            async for chunk in chunks:
                yield chunk

        return sniffed, body()

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The decoded body, chunk by chunk, with the size limit and Content-Length enforced.

        A compressed body is inflated here, a bounded piece at a time (aiohttp's own decompression
        is off): a small gzip bomb must not blow far past the size limit in memory before the limit
        is even checked.
        """
        inflate = _inflater(self.response.headers.get("content-encoding"), self.url)
        raw_bytes = received = 0
        try:
            async for raw in self.response.content.iter_chunked(_READ_BYTES):
                raw_bytes += len(raw)
                for piece in inflate(raw, self.max_bytes - received + 1):
                    received += len(piece)
                    if received > self.max_bytes:
                        raise FetchError(ErrorKind.TOO_LARGE,
                                         f"{self.url} sent more than the limit of {bytes_and_human(self.max_bytes)} "
                                         "(MEDIACACHE_MAX_BYTES)")
                    yield piece
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _transport_error(exc, self.url) from exc
        expected = self.content_length
        # A body shorter than its Content-Length was cut off: never a cached file.
        if expected is not None and raw_bytes != expected:
            raise FetchError(ErrorKind.TRANSIENT,
                             f"{self.url} sent {raw_bytes} bytes of the {expected} its Content-Length announced")


_INFLATE_STEP_BYTES = 256 * 1024


def _inflater(encoding: str | None, url: str) -> Callable[[bytes, int], Iterator[bytes]]:
    """A function turning raw body bytes into decoded pieces of at most 256 KiB each."""
    name = (encoding or "identity").strip().lower()
    if name in ("", "identity"):
        return lambda raw, _limit: iter((raw,)) if raw else iter(())
    if name not in ("gzip", "x-gzip", "deflate"):
        raise FetchError(ErrorKind.UNSUPPORTED_TYPE, f"{url} sent a body in Content-Encoding {name!r}, "
                                                     "which mediacache does not decode (it asks for identity)")
    # 47: zlib or gzip header, whichever the body has (servers label deflate streams loosely).
    decoder = zlib.decompressobj(wbits=47)

    def inflate(raw: bytes, limit: int) -> Iterator[bytes]:
        data = raw
        while data:
            try:
                piece = decoder.decompress(data, max(1, min(limit, _INFLATE_STEP_BYTES)))
            except zlib.error as exc:
                raise FetchError(ErrorKind.TRANSIENT, f"{url} sent a corrupt {name} body: {exc}") from exc
            data = decoder.unconsumed_tail
            if not piece and data:
                raise FetchError(ErrorKind.TRANSIENT, f"{url} sent a {name} body that does not decode")
            if piece:
                limit -= len(piece)
                yield piece

    return inflate


class Fetcher:
    """One pooled HTTP client for all downloads of a process."""

    def __init__(self, settings: Settings, *, connector: aiohttp.BaseConnector | None = None,
                 max_connections: int = 100) -> None:
        self.settings = settings
        self._connector = connector
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use: aiohttp binds a session to the running event loop, and a Fetcher may
        # be built before the loop that uses it runs.
        if self._session is None:
            settings = self.settings
            # Every address a host resolves to is checked, and so is the address each socket
            # connects to: URLs come from scraped data and we fetch from inside the network.
            connector = self._connector or guarded_connector(AddressPolicy(settings.allowed_network_list),
                                                             limit=self._max_connections)
            self._session = aiohttp.ClientSession(
                connector=connector,
                # connect: waiting for a pooled connection, resolving and connecting; sock_read: any
                # one read, the response head included. The whole download's deadline is the handler's.
                timeout=aiohttp.ClientTimeout(connect=settings.connect_timeout_s,
                                              sock_connect=settings.connect_timeout_s,
                                              sock_read=settings.read_timeout_s),
                # Environment proxies would route around the address checks of the connector.
                trust_env=False,
                # Bodies are inflated by Download.chunks, a bounded piece at a time.
                auto_decompress=False,
                # One client serves every origin: none may set a cookie that another request carries.
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": USER_AGENT, "Accept": "image/*,video/*,audio/*,*/*;q=0.5",
                         "Accept-Encoding": "identity"},
            )
            # aiohttp sends a GET again when its connection drops, fresh connection or not: a failing
            # host would see every attempt twice, and the host limiter's breaker would count one
            # failure for two requests. A job's attempts are the only retries. There is no public
            # switch; this is the attribute aiohttp's own test client clears (tests guard it).
            self._session._retry_connection = False
        return self._session

    @asynccontextmanager
    async def open(self, url: str) -> AsyncIterator[Download]:
        """Follows up to MAX_REDIRECTS redirects and yields the final 2xx response, unread."""
        try:
            current = validate_url(url).to_httpx()
        except InvalidURLError as exc:
            raise FetchError(ErrorKind.INVALID_URL, str(exc)) from exc
        if is_expired(url):
            raise FetchError(ErrorKind.EXPIRED, f"{url} is a signed link whose expiry time has passed")
        client = self._client()
        for _hop in range(MAX_REDIRECTS + 1):
            try:
                response = await client.get(_request_url(current), allow_redirects=False)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise _transport_error(exc, str(current)) from exc
            try:
                if response.status in _REDIRECT_STATUSES:
                    location = response.headers.get("location")
                    if not location:
                        raise FetchError(ErrorKind.FORBIDDEN,
                                         f"{current} answered {response.status} without a Location")
                    current = check_redirect(current, location)
                    continue
                check_status(response.status, response.headers, str(current), original_url=url)
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > self.settings.max_bytes:
                    raise FetchError(ErrorKind.TOO_LARGE,
                                     f"{current} announces {bytes_and_human(int(declared))}, over the limit of "
                                     f"{bytes_and_human(self.settings.max_bytes)} (MEDIACACHE_MAX_BYTES)")
                yield Download(str(current), response, self.settings.max_bytes)
                return
            finally:
                # Back to the pool when the body was read to its end; closed otherwise.
                response.release()
        raise FetchError(ErrorKind.TOO_MANY_REDIRECTS, f"{url} redirected more than {MAX_REDIRECTS} times")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        elif self._connector is not None:
            await self._connector.close()


def _request_url(url: httpx.URL) -> yarl.URL:
    """The checked URL as aiohttp will send it, refused if its host or port reads differently there.

    It goes out in httpx's encoding, the form urls.py checked (and the one signed links were sent
    in before), and yarl is told not to re-encode it. A host or port that yarl parses otherwise
    would mean the request goes somewhere that was not checked.
    """
    target = yarl.URL(str(url), encoded=True)
    host = url.raw_host.decode("ascii").lower()
    if (target.raw_host or "").lower() != host or target.explicit_port != url.port:
        raise FetchError(ErrorKind.INVALID_URL, f"{shown_url(str(url))} names its host differently to the "
                                                "URL checks and to the HTTP client; refusing it")
    return target


def check_status(code: int, headers: CIMultiDictProxy[str], url: str, *, original_url: str | None = None) -> None:
    """Maps a non-2xx status to the FetchError kind that says whether retrying can help."""
    if 200 <= code < 300:
        return
    if code in (401, 403, 410) and (is_expired(url) or (original_url is not None and is_expired(original_url))):
        raise FetchError(ErrorKind.EXPIRED, f"{url} answered {code}: its signed link has expired", host_verdict="ok")
    if code in (404, 410):
        raise FetchError(ErrorKind.NOT_FOUND, f"{url} answered {code}", host_verdict="ok")
    if code in (408, 425, 429) or code >= 500:
        retry_after_s = parse_retry_after(headers.get("retry-after"))
        # The origin's word for the whole host: 429, or 503 with Retry-After, pauses it (host_limiter.py).
        throttled = code == 429 or (code == 503 and retry_after_s is not None)
        verdict = "throttled" if throttled else "failure" if code >= 500 else "ok"
        raise FetchError(ErrorKind.TRANSIENT, f"{url} answered {code}", retry_after_s=retry_after_s,
                         host_verdict=verdict)
    raise FetchError(ErrorKind.FORBIDDEN, f"{url} answered {code}", host_verdict="ok")


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, delta)


def _transport_error(exc: aiohttp.ClientError | TimeoutError, url: str) -> FetchError:
    shown = shown_url(url)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return FetchError(ErrorKind.TRANSIENT, f"timed out connecting to {shown}", host_verdict="failure")
    if isinstance(exc, TimeoutError):  # aiohttp's read time-outs are TimeoutErrors too
        return FetchError(ErrorKind.TRANSIENT, f"timed out reading {shown}", host_verdict="failure")
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return FetchError(ErrorKind.TRANSIENT, f"cannot resolve {exc.host} (downloading {shown}): "
                                               f"{exc.os_error.strerror or exc.os_error}", host_verdict="failure")
    if isinstance(exc, aiohttp.ClientConnectorError):
        where = f"[{exc.host}]:{exc.port}" if ":" in exc.host else f"{exc.host}:{exc.port}"
        return FetchError(ErrorKind.TRANSIENT, f"cannot connect to {where}: {exc.os_error.strerror or exc.os_error} "
                                               f"(downloading {shown})", host_verdict="failure")
    if isinstance(exc, aiohttp.InvalidURL):
        return FetchError(ErrorKind.INVALID_URL, f"cannot fetch {shown}: {exc}")
    if isinstance(exc, aiohttp.ClientResponseError):
        # Raised while the response is read (no status was checked here): not HTTP, or malformed.
        if "Data after `Connection: close`" in exc.message:
            # More bytes than the Content-Length announced: either the length or the body is wrong
            # (RFC 9112 section 9.3), and a body that may be cut short is never a cached file.
            return FetchError(ErrorKind.TRANSIENT, f"{shown} sent more bytes than its Content-Length announced",
                              host_verdict="failure")
        return FetchError(ErrorKind.TRANSIENT, f"{shown} did not answer in HTTP: {_brief(exc.message)}",
                          host_verdict="failure")
    return FetchError(ErrorKind.TRANSIENT, f"download of {shown} failed: {type(exc).__name__}: {_brief(str(exc))}",
                      host_verdict="failure")


def _brief(text: str, max_chars: int = 200) -> str:
    """The first line of a library's message, cut short: aiohttp's parser errors quote what it read."""
    line = text.strip().split("\n", 1)[0]
    return line if len(line) <= max_chars else line[:max_chars] + "..."
