"""Streaming download with limits; turns httpx errors and HTTP statuses into FetchError kinds."""

from __future__ import annotations

import email.utils
import time
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC

import httpx

from mediacache.domain import ErrorKind, bytes_and_human
from mediacache.errors import FetchError, InvalidURLError, shown_url
from mediacache.fetching.expiry import is_expired
from mediacache.fetching.netguard import AddressPolicy, guarded_transport
from mediacache.fetching.sniff import SNIFF_HEAD_BYTES, is_allowed, sniff_content_type
from mediacache.fetching.urls import check_redirect, validate_url
from mediacache.settings import Settings

MAX_REDIRECTS = 5
USER_AGENT = "mediacache/0.1 (+https://github.com/mediacache)"


@dataclass
class Download:
    """An open response whose body has not been read yet."""

    url: str
    response: httpx.Response
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

        A compressed body is inflated here, a bounded piece at a time, rather than by httpx, which
        inflates whole network reads: a small gzip bomb would otherwise blow far past the size
        limit in memory before the limit is even checked.
        """
        inflate = _inflater(self.response.headers.get("content-encoding"), self.url)
        raw_bytes = received = 0
        try:
            async for raw in self.response.aiter_raw():
                raw_bytes += len(raw)
                for piece in inflate(raw, self.max_bytes - received + 1):
                    received += len(piece)
                    if received > self.max_bytes:
                        raise FetchError(ErrorKind.TOO_LARGE,
                                         f"{self.url} sent more than the limit of {bytes_and_human(self.max_bytes)} "
                                         "(MEDIACACHE_MAX_BYTES)")
                    yield piece
        except httpx.HTTPError as exc:
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

    def __init__(self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None,
                 max_connections: int = 100) -> None:
        self.settings = settings
        timeout = httpx.Timeout(connect=settings.connect_timeout_s, read=settings.read_timeout_s,
                                write=settings.read_timeout_s, pool=settings.connect_timeout_s)
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        if transport is None:
            # Every address a host resolves to is checked when connecting, and the connection goes
            # to the checked address: URLs come from scraped data and we fetch from inside the network.
            transport = guarded_transport(AddressPolicy(settings.allowed_network_list),
                                          connect_timeout_s=settings.connect_timeout_s, limits=limits)
        self._client = httpx.AsyncClient(
            transport=transport, timeout=timeout, follow_redirects=False,
            # Environment proxies would route around the address checks of the transport.
            trust_env=False,
            headers={"User-Agent": USER_AGENT, "Accept": "image/*,video/*,audio/*,*/*;q=0.5",
                     "Accept-Encoding": "identity"},
            event_hooks={"response": [_check_location]},
        )

    @asynccontextmanager
    async def open(self, url: str) -> AsyncIterator[Download]:
        """Follows up to MAX_REDIRECTS redirects and yields the final 2xx response, unread."""
        try:
            current = validate_url(url).to_httpx()
        except InvalidURLError as exc:
            raise FetchError(ErrorKind.INVALID_URL, str(exc)) from exc
        if is_expired(url):
            raise FetchError(ErrorKind.EXPIRED, f"{url} is a signed link whose expiry time has passed")
        for _hop in range(MAX_REDIRECTS + 1):
            request = self._client.build_request("GET", current)
            try:
                response = await self._client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise _transport_error(exc, str(current)) from exc
            try:
                if response.is_redirect:
                    location = response.headers.get("location")
                    if not location:
                        raise FetchError(ErrorKind.FORBIDDEN,
                                         f"{current} answered {response.status_code} without a Location")
                    current = check_redirect(current, location)
                    continue
                check_status(response, str(current), original_url=url)
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > self.settings.max_bytes:
                    raise FetchError(ErrorKind.TOO_LARGE,
                                     f"{current} announces {bytes_and_human(int(declared))}, over the limit of "
                                     f"{bytes_and_human(self.settings.max_bytes)} (MEDIACACHE_MAX_BYTES)")
                yield Download(str(current), response, self.settings.max_bytes)
                return
            finally:
                await response.aclose()
        raise FetchError(ErrorKind.TOO_MANY_REDIRECTS, f"{url} redirected more than {MAX_REDIRECTS} times")

    async def close(self) -> None:
        await self._client.aclose()


async def _check_location(response: httpx.Response) -> None:
    """Refuses a redirect's Location by our rules before httpx parses it.

    httpx builds the next request of every redirect even when it does not follow them, and turns a
    Location it cannot parse (`http://0177.0.0.1/`) into RemoteProtocolError: that would read as a
    transient failure and be retried, while a refused target is final (invalid_url or blocked).
    """
    if response.has_redirect_location:
        check_redirect(response.request.url, response.headers["location"])


def check_status(response: httpx.Response, url: str, *, original_url: str | None = None) -> None:
    """Maps a non-2xx status to the FetchError kind that says whether retrying can help."""
    code = response.status_code
    if 200 <= code < 300:
        return
    if code in (401, 403, 410) and (is_expired(url) or (original_url is not None and is_expired(original_url))):
        raise FetchError(ErrorKind.EXPIRED, f"{url} answered {code}: its signed link has expired", host_verdict="ok")
    if code in (404, 410):
        raise FetchError(ErrorKind.NOT_FOUND, f"{url} answered {code}", host_verdict="ok")
    if code in (408, 425, 429) or code >= 500:
        retry_after_s = parse_retry_after(response.headers.get("retry-after"))
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


def _transport_error(exc: httpx.HTTPError, url: str) -> FetchError:
    if isinstance(exc, httpx.TimeoutException):
        what = "connecting" if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout) else "reading"
        return FetchError(ErrorKind.TRANSIENT, f"timed out {what} {shown_url(url)}", host_verdict="failure")
    if isinstance(exc, httpx.ConnectError):
        detail = str(exc)
        # The guarded transport's own message already names the host, port and addresses tried.
        if detail.startswith("cannot connect to "):
            return FetchError(ErrorKind.TRANSIENT, f"{detail} (downloading {shown_url(url)})", host_verdict="failure")
        return FetchError(ErrorKind.TRANSIENT, f"cannot connect to {shown_url(url)}: {detail}",
                          host_verdict="failure")
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return FetchError(ErrorKind.INVALID_URL, f"cannot fetch {shown_url(url)}: {exc}")
    return FetchError(ErrorKind.TRANSIENT, f"download of {shown_url(url)} failed: {type(exc).__name__}: {exc}",
                      host_verdict="failure")
