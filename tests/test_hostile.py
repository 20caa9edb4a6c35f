"""Safe fetching end to end: bad URLs against a hostile origin through the real worker, Redis and databases.

Each case of the table ends refused at enqueue (InvalidURLError, nothing written) or FAILED with
the right error kind, after one attempt for final kinds and three for transient ones, with the
origin seeing exactly the requests that implies. The canary, which stands for an internal
service, must see no connection at all, and no failure may leave a file in storage.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpcore
import httpx
import hypothesis
import pytest
from hypothesis import strategies as st

from mediacache.domain import CacheStatus, ErrorKind
from mediacache.errors import FetchError, InvalidURLError
from mediacache.fetching.guarded_connector import GuardedSocketFactory
from mediacache.fetching.netguard import AddressPolicy, GuardedNetworkBackend
from mediacache.fetching.source_key import source_key
from mediacache.fetching.urls import host_address
from mediacache.service import MediaCache
from mediacache.settings import Settings
from tests.support.hostile_origin import HostileOrigin, png_bytes
from tests.support.services import SettingsFactory, WorkerFactory
from tests.support.waiting import wait_until

MAX_BYTES = 1024 * 1024
# Only the hostile origin's address is opened; the canary's 127.0.0.1 and ::1 stay blocked.
HOSTILE_SETTINGS: dict[str, Any] = {
    "allowed_networks": "127.0.0.2/32",
    # Every hostile target is one host: its breaker would open after the first few failures and
    # hold the rest back, which is right in production and beside the point of these tests.
    "host_breaker": "100000/1s:1s",
    "connect_timeout_s": 2.0,
    "read_timeout_s": 2.0,
    "download_deadline_s": 4.0,
    "max_bytes": MAX_BYTES,
    # bullmq rounds shorter backoffs up to about 1 s anyway.
    "backoff_ms": 1000,
}
ATTEMPTS = 3


@pytest.fixture
async def hostile_cache(make_settings: SettingsFactory) -> AsyncIterator[MediaCache]:
    """A MediaCache whose downloads may only reach 127.0.0.2, with short limits.

    Tests list this fixture before `start_worker`, so the workers stop before it closes.
    """
    mc = MediaCache(make_settings(**HOSTILE_SETTINGS))
    yield mc
    await mc.close()


# ---- the table -------------------------------------------------------------------------------

Build = Callable[[HostileOrigin, str], str]


def _fill(template: str, o: HostileOrigin, token: str) -> str:
    now = int(time.time())
    return template.format(port=o.port, t=token, past=now - 3600, future=now + 3600, over=MAX_BYTES + 1)


def raw(template: str) -> Build:
    """A URL as written (placeholders: {port} of the origin and canary, {t} the case's token)."""
    return lambda o, t: _fill(template, o, t)


def at(path: str) -> Build:
    """A path on the hostile origin."""
    return lambda o, t: o.url(_fill(path, o, t))


def redirect(target: str, code: int = 302) -> Build:
    """A URL on the origin that redirects to `target`."""
    return lambda o, t: o.redirect_to(t, _fill(target, o, t), code=code)


def redirect_twice(target: str) -> Build:
    """Origin -> origin -> `target`: the second hop must be checked like the first."""
    return lambda o, t: o.redirect_to(t, o.redirect_to(t, _fill(target, o, t), code=307), code=301)


@dataclass(frozen=True)
class Case:
    name: str
    build: Build
    kind: ErrorKind | None            # None: refused at enqueue with InvalidURLError
    hits: int | None = None           # requests the origin sees for the case; default: one per attempt
    bypass: bool = False              # written straight to the database and queue, as a foreign producer might

    @property
    def attempts(self) -> int:
        return ATTEMPTS if self.kind is ErrorKind.TRANSIENT else 1

    @property
    def expected_hits(self) -> int:
        if self.hits is not None:
            return self.hits
        return 0 if self.kind is None or self.bypass else self.attempts


K = ErrorKind
CASES: list[Case] = [
    # -- refused by cache_image before anything is written
    Case("file-scheme", raw("file:///etc/passwd"), None),
    Case("ftp-scheme", raw("ftp://127.0.0.2:{port}/img/{t}.jpg"), None),
    Case("gopher-to-redis", raw("gopher://127.0.0.1:6379/_FLUSHALL"), None),
    Case("javascript", raw("javascript:alert(document.domain)//{t}"), None),
    Case("data-url", raw("data:image/png;base64,iVBORw0KGgo="), None),
    Case("empty", raw(""), None),
    Case("words", raw("not a url"), None),
    Case("credentials", raw("http://user:pass@127.0.0.2:{port}/img/{t}.jpg"), None),
    Case("empty-userinfo", raw("http://@127.0.0.2:{port}/img/{t}.jpg"), None),
    Case("decimal-host", raw("http://2130706433:{port}/secret/{t}"), None),
    Case("hex-host", raw("http://0x7f000001:{port}/secret/{t}"), None),
    Case("octal-host", raw("http://0177.0.0.1:{port}/secret/{t}"), None),
    Case("short-host", raw("http://127.1:{port}/secret/{t}"), None),
    Case("trailing-dot-address", raw("http://127.0.0.1.:{port}/secret/{t}"), None),
    Case("ipv6-zone-id", raw("http://[fe80::1%25eth0]:{port}/secret/{t}"), None),
    Case("space", raw("http://127.0.0.2:{port}/img/{t} x.jpg"), None),
    Case("crlf-injection", raw("http://127.0.0.2:{port}/img/{t}.jpg\r\nX-Injected: 1"), None),
    Case("nul-byte", raw("http://127.0.0.2:{port}/img/{t}\x00.jpg"), None),
    Case("backslash-authority", raw("http://127.0.0.2:{port}\\@127.0.0.1:{port}/secret/{t}"), None),
    Case("no-host", raw("http:///img/{t}.jpg"), None),
    Case("port-out-of-range", raw("http://127.0.0.2:99999/img/{t}.jpg"), None),
    Case("scheme-relative", raw("//127.0.0.2:{port}/img/{t}.jpg"), None),
    Case("too-long", lambda o, t: o.url(f"/img/{t}.jpg?pad=" + "a" * 5000), None),

    # -- written and queued, refused by the guard before any connection (no request anywhere)
    Case("canary-ipv4", raw("http://127.0.0.1:{port}/secret/{t}"), K.BLOCKED, hits=0),
    Case("canary-localhost", raw("http://localhost:{port}/secret/{t}"), K.BLOCKED, hits=0),
    Case("canary-ipv6", raw("http://[::1]:{port}/secret/{t}"), K.BLOCKED, hits=0),
    Case("canary-ipv4-mapped", raw("http://[::ffff:127.0.0.1]:{port}/secret/{t}"), K.BLOCKED, hits=0),
    Case("canary-nat64", raw("http://[64:ff9b::7f00:1]:{port}/secret/{t}"), K.BLOCKED, hits=0),
    Case("unspecified-ipv4", raw("http://0.0.0.0:{port}/secret/{t}"), K.BLOCKED, hits=0),
    Case("unspecified-ipv6", raw("http://[::]:{port}/secret/{t}"), K.BLOCKED, hits=0),
    Case("private-10", raw("http://10.0.0.1/secret/{t}"), K.BLOCKED, hits=0),
    Case("private-192-168", raw("http://192.168.1.1/secret/{t}"), K.BLOCKED, hits=0),
    Case("carrier-grade-nat", raw("http://100.64.0.1/secret/{t}"), K.BLOCKED, hits=0),
    Case("cloud-metadata", raw("http://169.254.169.254/latest/meta-data/{t}"), K.BLOCKED, hits=0),
    Case("ipv6-unique-local", raw("http://[fd00::1]/secret/{t}"), K.BLOCKED, hits=0),
    Case("multicast", raw("http://224.0.0.1/secret/{t}"), K.BLOCKED, hits=0),

    # -- a producer that skips our validation (Node BullMQ, a raw INSERT): the worker checks again
    Case("bypass-decimal-host", raw("http://2130706433:{port}/secret/{t}"), K.INVALID_URL, bypass=True),
    Case("bypass-credentials", raw("http://user:pass@127.0.0.2:{port}/img/{t}.jpg"), K.INVALID_URL, bypass=True),
    Case("bypass-file-scheme", raw("file:///etc/passwd#{t}"), K.INVALID_URL, bypass=True),
    Case("bypass-header-injection", raw("http://127.0.0.2:{port}/img/{t}.jpg\r\nHost: 127.0.0.1"), K.INVALID_URL,
         bypass=True),

    # -- statuses: final ones once, transient ones (Retry-After honoured) three times
    Case("status-404", at("/status/{t}?code=404"), K.NOT_FOUND),
    Case("status-410", at("/status/{t}?code=410"), K.NOT_FOUND),
    Case("status-403", at("/status/{t}?code=403"), K.FORBIDDEN),
    Case("status-401", at("/status/{t}?code=401"), K.FORBIDDEN),
    Case("status-400", at("/status/{t}?code=400"), K.FORBIDDEN),
    Case("status-418", at("/status/{t}?code=418"), K.FORBIDDEN),
    Case("status-451", at("/status/{t}?code=451"), K.FORBIDDEN),
    Case("redirect-without-location", at("/redirect/{t}"), K.FORBIDDEN),
    Case("status-500", at("/status/{t}?code=500"), K.TRANSIENT),
    Case("status-502", at("/status/{t}?code=502"), K.TRANSIENT),
    Case("status-408", at("/status/{t}?code=408"), K.TRANSIENT),
    Case("status-503-retry-after", at("/status/{t}?code=503&retry_after=1"), K.TRANSIENT),
    Case("status-429-retry-after", at("/status/{t}?code=429&retry_after=1"), K.TRANSIENT),

    # -- bodies that trickle, never end, lie, or are not media
    Case("slow-body", at("/slow/{t}.jpg"), K.TRANSIENT),                 # the 4 s deadline ends it
    Case("endless-trickle", at("/trickle/{t}.jpg"), K.TRANSIENT),        # likewise, without a length
    Case("endless-body", at("/endless/{t}.jpg"), K.TOO_LARGE),
    Case("endless-chunked", at("/endless-chunked/{t}.jpg"), K.TOO_LARGE),
    Case("shorter-than-content-length", at("/short/{t}.jpg"), K.TRANSIENT),
    # More bytes than Content-Length, then close: the length or the body is wrong (RFC 9112
    # section 9.3), so the first Content-Length bytes may be a cut-off file. Never cached.
    Case("longer-than-content-length", at("/long/{t}.jpg?announce=5000&size=9000"), K.TRANSIENT),
    Case("cut-off-before-sniffing", at("/short/{t}.jpg?size=100"), K.TRANSIENT),
    Case("reset-mid-body", at("/reset/{t}.jpg"), K.TRANSIENT),
    Case("headers-then-silence", at("/hang/{t}.jpg"), K.TRANSIENT),    # read time-out
    Case("no-answer", at("/silent/{t}.jpg"), K.TRANSIENT),
    Case("not-http", at("/garbage/{t}.jpg"), K.TRANSIENT),
    Case("html-200-as-jpeg", at("/body/{t}?kind=html"), K.UNSUPPORTED_TYPE),
    Case("json-200", at("/body/{t}?kind=json"), K.UNSUPPORTED_TYPE),
    Case("empty-200", at("/body/{t}?kind=empty"), K.UNSUPPORTED_TYPE),
    Case("svg-with-script", at("/body/{t}?kind=svg"), K.UNSUPPORTED_TYPE),
    Case("pdf-as-jpeg", at("/body/{t}?kind=pdf"), K.UNSUPPORTED_TYPE),
    Case("zip-as-jpeg", at("/body/{t}?kind=zip"), K.UNSUPPORTED_TYPE),
    Case("executable-as-jpeg", at("/body/{t}?kind=elf"), K.UNSUPPORTED_TYPE),
    Case("huge-content-length", at("/huge/{t}.mp4"), K.TOO_LARGE),
    Case("one-byte-over-the-limit", at("/img/{t}.jpg?size={over}"), K.TOO_LARGE),
    Case("too-big-without-length", at("/big/{t}.jpg"), K.TOO_LARGE),
    Case("gzip-bomb", at("/gzip/{t}.jpg"), K.TOO_LARGE),

    # -- redirects: loops, long chains, and every way into the internal network
    Case("redirect-loop", at("/loop/{t}?side=a"), K.TOO_MANY_REDIRECTS, hits=6),
    Case("redirect-chain-of-6", at("/chain/{t}?n=6"), K.TOO_MANY_REDIRECTS, hits=6),
    Case("to-file", redirect("file:///etc/passwd"), K.BLOCKED),
    Case("to-ftp", redirect("ftp://127.0.0.2:{port}/img/{t}.jpg"), K.BLOCKED),
    Case("to-gopher", redirect("gopher://127.0.0.1:{port}/_GET%20/secret"), K.BLOCKED),
    Case("to-cloud-metadata", redirect("http://169.254.169.254/latest/meta-data/"), K.BLOCKED),
    Case("to-canary-ipv4", redirect("http://127.0.0.1:{port}/secret"), K.BLOCKED),
    Case("to-canary-ipv4-307", redirect("http://127.0.0.1:{port}/secret", code=307), K.BLOCKED),
    Case("to-canary-ipv4-308", redirect("http://127.0.0.1:{port}/secret", code=308), K.BLOCKED),
    Case("to-canary-ipv6", redirect("http://[::1]:{port}/secret"), K.BLOCKED),
    Case("to-localhost", redirect("http://localhost:{port}/secret"), K.BLOCKED),
    Case("to-ipv4-mapped", redirect("http://[::ffff:127.0.0.1]:{port}/secret"), K.BLOCKED),
    Case("to-unspecified", redirect("http://0.0.0.0:{port}/secret"), K.BLOCKED),
    Case("to-private-10", redirect("http://10.0.0.1/secret"), K.BLOCKED),
    Case("to-scheme-relative-canary", redirect("//127.0.0.1:{port}/secret"), K.BLOCKED),
    Case("to-canary-on-second-hop", redirect_twice("http://127.0.0.1:{port}/secret"), K.BLOCKED, hits=2),
    Case("to-decimal-host", redirect("http://2130706433:{port}/secret"), K.INVALID_URL),
    Case("to-hex-host", redirect("http://0x7f000001:{port}/secret"), K.INVALID_URL),
    Case("to-octal-host", redirect("http://0177.0.0.1:{port}/secret"), K.INVALID_URL),
    Case("to-short-host", redirect("http://127.1:{port}/secret"), K.INVALID_URL),
    Case("to-credentials", redirect("http://user:pass@127.0.0.2:{port}/img/{t}.jpg"), K.INVALID_URL),
    Case("to-backslash", redirect("/\\127.0.0.1:{port}/secret"), K.INVALID_URL),

    # -- signed links: a past x-expires is refused without a request; a 403 behind a redirect
    # to one is `expired`; a 403 from a link still valid is an ordinary refusal
    Case("expired-signed-link", at("/signed/{t}.jpg?x-expires={past}"), K.EXPIRED, hits=0),
    Case("redirect-to-expired-signed-403", lambda o, t: o.redirect_to(
        t, o.url(_fill("/signed/{t}.jpg?x-expires={past}", o, t))), K.EXPIRED, hits=2),
    Case("live-signed-link-403", at("/signed/{t}.jpg?x-expires={future}"), K.FORBIDDEN),
]


def test_the_table_is_big_and_names_are_unique() -> None:
    assert len({c.name for c in CASES}) == len(CASES)
    assert len(CASES) >= 40
    assert len([c for c in CASES if c.kind is not None]) >= 40


def _targets(url: str) -> Iterator[str]:
    """`url` and, for the origin's /redirect/ URLs, every hop they send the worker to."""
    yield url
    parts = urlsplit(url)
    if parts.path.startswith("/redirect/"):
        for target in parse_qs(parts.query).get("to", []):
            yield from _targets(target)


class _NoConnect(httpcore.AsyncNetworkBackend):
    """A network backend that fails the test if the guard ever asks it to connect."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, int]] = []

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109 - httpcore API
                          local_address: str | None = None,
                          socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        self.attempts.append((host, port))
        raise AssertionError(f"the guard tried to connect to {host}:{port}")


async def _assert_guard_refuses_without_connecting(settings: Settings, urls: Iterable[str]) -> None:
    """Every address literal the table sends the worker to is refused before a socket is opened.

    Checked before the table runs, so that a broken guard fails here instead of sending packets to
    10.0.0.1 or 169.254.169.254 on whatever network this machine is on.
    """
    policy = AddressPolicy(settings.allowed_network_list)
    hosts: dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}
    for url in urls:
        for target in _targets(url):
            try:
                host = httpx.URL(target).host
            except (httpx.InvalidURL, ValueError, UnicodeError):
                continue
            address = host_address(host)
            if address is not None:
                hosts[host] = address
    assert {"10.0.0.1", "169.254.169.254", "::1", "127.0.0.1"} <= hosts.keys()
    for host, address in sorted(hosts.items()):
        if policy.blocked_reason(address) is None:
            # Only the origin may pass; anything else let through here would be a real packet
            # to an address outside this machine.
            assert address.version == 4 and address in ipaddress.ip_network("127.0.0.0/8"), (
                f"the guard would let the worker connect to {host}; refusing to run the table")
            continue
        inner = _NoConnect()
        with pytest.raises(FetchError) as info:
            await GuardedNetworkBackend(policy, inner=inner).connect_tcp(host, 80, timeout=1.0)
        assert info.value.kind is ErrorKind.BLOCKED and inner.attempts == [], host
        # The worker's downloads go through aiohttp, which hands address literals straight to its
        # socket factory: the factory must refuse them before a socket exists.
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        with pytest.raises(FetchError) as info:
            GuardedSocketFactory(policy)((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (str(address), 80)))
        assert info.value.kind is ErrorKind.BLOCKED, host


def _files_in(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def _unsettled(cache: MediaCache) -> int:
    stats = await cache.cache_stats()
    return stats.pending + stats.downloading


async def test_every_bad_url_is_refused_or_fails_with_its_kind_and_the_canary_sees_nothing(
        hostile_cache: MediaCache, start_worker: WorkerFactory, hostile: HostileOrigin) -> None:
    cache = hostile_cache
    run = uuid.uuid4().hex[:8]
    urls = {c.name: c.build(hostile, f"{c.name}-{run}") for c in CASES}
    queued = [c for c in CASES if c.kind is not None and not c.bypass]
    bypassed = [c for c in CASES if c.bypass]
    await _assert_guard_refuses_without_connecting(cache.settings, [urls[c.name] for c in queued + bypassed])

    # Refused at enqueue: our error, one at a time and inside a batch of good URLs, and nothing written.
    problems: list[str] = []
    for case in CASES:
        if case.kind is None:
            try:
                await cache.cache_image(urls[case.name])
                problems.append(f"{case.name}: queued, expected InvalidURLError")
            except InvalidURLError:
                pass
    with pytest.raises(InvalidURLError):
        await cache.cache_images([hostile.url("/img/fine.jpg"), urls["decimal-host"]])
    stats = await cache.cache_stats()
    assert stats.total == 0, "a refused URL was written"
    assert (await cache.queue_stats()).waiting == 0, "a refused URL was queued"

    ids = dict(zip([c.name for c in queued], await cache.cache_images([urls[c.name] for c in queued]), strict=True))
    foreign = [(uuid.uuid4(), urls[c.name]) for c in bypassed]
    await cache.backends.assets.insert_pending(foreign)
    await cache.backends.queue.add_bulk(foreign)
    ids.update(zip([c.name for c in bypassed], [i for i, _ in foreign], strict=True))

    started = time.monotonic()
    await start_worker(cache, concurrency=16)
    await wait_until(lambda: _settled_count(cache, 0), timeout_s=50, interval_s=0.2, what="every bad URL to settle")
    await wait_until(lambda: _queue_failed(cache, len(ids)), timeout_s=10, what="every job to be failed in BullMQ")
    elapsed_s = time.monotonic() - started

    for case in CASES:
        if case.kind is None:
            if hostile.hits(f"{case.name}-{run}"):
                problems.append(f"{case.name}: refused at enqueue, yet the origin saw it")
            continue
        rec = await cache.get_asset(ids[case.name])
        hits = len(hostile.hits(f"{case.name}-{run}"))
        if rec is None:
            problems.append(f"{case.name}: no asset")
            continue
        got = (rec.status, rec.error_kind, rec.attempts, hits)
        want = (CacheStatus.FAILED, case.kind.value, case.attempts, case.expected_hits)
        if got != want:
            problems.append(f"{case.name}: got status/kind/attempts/origin hits {got}, expected {want}; {rec.error}")
        elif not rec.error or rec.cache_key is not None:
            problems.append(f"{case.name}: error {rec.error!r}, cache_key {rec.cache_key!r}")
    assert not problems, "\n".join(problems)

    stats = await cache.cache_stats()
    expected_kinds = Counter(c.kind.value for c in CASES if c.kind is not None)
    assert stats.failed == len(ids) and stats.cached == 0
    assert stats.failed_by_kind == dict(expected_kinds)
    assert hostile.canary_connections == 0, hostile.canary and hostile.canary.request_lines
    # No object and no temporary file, whichever way an attempt failed.
    assert _files_in(cache.settings.objects_dir) == []
    # Transient cases need three attempts with 1 s and 2 s backoff, the slow ones 4 s each.
    assert elapsed_s < 45, f"the table took {elapsed_s:.1f} s"


async def _settled_count(cache: MediaCache, n: int) -> bool:
    return await _unsettled(cache) == n


async def _queue_failed(cache: MediaCache, n: int) -> bool:
    return (await cache.queue_stats()).failed == n


# ---- single behaviours ----------------------------------------------------------------------


async def _settle(cache: MediaCache, ids: list[uuid.UUID], timeout_s: float = 30) -> None:
    async def settled() -> bool:
        for asset_id in ids:
            rec = await cache.get_asset(asset_id)
            if rec is None or rec.status not in (CacheStatus.CACHED, CacheStatus.FAILED):
                return False
        return True
    await wait_until(settled, timeout_s=timeout_s, what=f"{len(ids)} assets to settle")


def _assert_clean(cache: MediaCache, hostile: HostileOrigin, *, objects: int = 0) -> None:
    assert hostile.canary_connections == 0
    files = _files_in(cache.settings.objects_dir)
    assert len(files) == objects and not any(".tmp" in p.parts for p in files), files


async def test_404_ends_failed_after_one_attempt(
        hostile_cache: MediaCache, start_worker: WorkerFactory, hostile: HostileOrigin) -> None:
    token = f"nf-{uuid.uuid4().hex[:8]}"
    asset_id = await hostile_cache.cache_image(hostile.url(f"/status/{token}?code=404"))
    await start_worker(hostile_cache)
    await _settle(hostile_cache, [asset_id])
    await wait_until(lambda: _queue_failed(hostile_cache, 1), what="the job to be failed in BullMQ")
    rec = await hostile_cache.get_asset(asset_id)
    assert rec is not None and rec.status is CacheStatus.FAILED
    assert rec.attempts == 1 and rec.error_kind == "not_found" and "404" in (rec.error or "")
    # Failed for good: nothing is delayed for a retry, and the origin was asked once.
    q = await hostile_cache.queue_stats()
    assert (q.delayed, q.waiting, q.active) == (0, 0, 0)
    assert len(hostile.hits(token)) == 1
    _assert_clean(hostile_cache, hostile)


async def test_transient_statuses_that_recover_end_cached(
        hostile_cache: MediaCache, start_worker: WorkerFactory, hostile: HostileOrigin) -> None:
    run = uuid.uuid4().hex[:8]
    once, twice = f"503-{run}", f"500-{run}"
    ids = await hostile_cache.cache_images([
        hostile.url(f"/flaky/{once}?fail=1&code=503&retry_after=1"),
        hostile.url(f"/flaky/{twice}?fail=2&code=500"),
    ])
    await start_worker(hostile_cache)
    await _settle(hostile_cache, ids)
    for asset_id, attempts in zip(ids, (2, 3), strict=True):
        rec = await hostile_cache.get_asset(asset_id)
        assert rec is not None and rec.status is CacheStatus.CACHED, rec
        assert rec.attempts == attempts and rec.error is None and rec.error_kind is None
        assert rec.content_type == "image/jpeg" and rec.size_bytes == 2048
    assert len(hostile.hits(once)) == 2 and len(hostile.hits(twice)) == 3
    # One object per distinct file (both serve the same bytes, so content deduplication keeps
    # one): the failed attempts left nothing behind.
    records = [await hostile_cache.get_asset(i) for i in ids]
    _assert_clean(hostile_cache, hostile, objects=len({r.sha256 for r in records if r is not None}))


async def test_429_retry_after_delays_the_next_attempt(
        hostile_cache: MediaCache, start_worker: WorkerFactory, hostile: HostileOrigin) -> None:
    token = f"429-{uuid.uuid4().hex[:8]}"
    asset_id = await hostile_cache.cache_image(hostile.url(f"/flaky/{token}?fail=1&code=429&retry_after=2"))
    await start_worker(hostile_cache)
    await _settle(hostile_cache, [asset_id])
    rec = await hostile_cache.get_asset(asset_id)
    assert rec is not None and rec.status is CacheStatus.CACHED and rec.attempts == 2
    hits = hostile.hits(token)
    assert len(hits) == 2
    # The planned backoff is 1 s; the origin asked for 2 s. The gap also holds the worker's own
    # bookkeeping and BullMQ's delayed-job polling, hence the generous upper bound.
    assert 1.9 <= hits[1] - hits[0] < 8, hits


async def test_redirect_chain_of_exactly_five_ends_cached(
        hostile_cache: MediaCache, start_worker: WorkerFactory, hostile: HostileOrigin) -> None:
    token = f"chain5-{uuid.uuid4().hex[:8]}"
    asset_id = await hostile_cache.cache_image(hostile.url(f"/chain/{token}?n=5"))
    await start_worker(hostile_cache)
    await _settle(hostile_cache, [asset_id])
    rec = await hostile_cache.get_asset(asset_id)
    assert rec is not None and rec.status is CacheStatus.CACHED and rec.attempts == 1, rec
    assert len(hostile.hits(token)) == 6  # five redirects and the image
    _assert_clean(hostile_cache, hostile, objects=1)


async def test_stored_type_is_the_sniffed_one_and_sizes_are_what_was_announced(
        hostile_cache: MediaCache, start_worker: WorkerFactory, hostile: HostileOrigin) -> None:
    run = uuid.uuid4().hex[:8]
    ids = await hostile_cache.cache_images([
        hostile.url(f"/img/png-{run}.jpg?type=png&declared=image/jpeg"),
        # Exactly at MEDIACACHE_MAX_BYTES is allowed; one byte more is refused (in the table).
        hostile.url(f"/img/limit-{run}.jpg?size={MAX_BYTES}"),
    ])
    await start_worker(hostile_cache)
    await _settle(hostile_cache, ids)
    recs = [await hostile_cache.get_asset(i) for i in ids]
    assert all(r is not None and r.status is CacheStatus.CACHED for r in recs), recs
    png, limit = recs
    assert png is not None and png.content_type == "image/png" and png.size_bytes == len(png_bytes())
    assert png.cache_key is not None
    assert (hostile_cache.settings.objects_dir / png.cache_key).read_bytes() == png_bytes()
    assert limit is not None and limit.size_bytes == MAX_BYTES and limit.content_type == "image/jpeg"
    _assert_clean(hostile_cache, hostile, objects=2)


# ---- property: any text is queued or refused with our error ----------------------------------

_HOSTS = st.sampled_from([
    "127.0.0.2", "127.0.0.1", "localhost", "2130706433", "0x7f000001", "0177.0.0.1", "127.1", "127.0.0.1.",
    "[::1]", "[::ffff:127.0.0.1]", "[fe80::1%25lo]", "169.254.169.254", "example.com", "xn--nxasmq6b.com",
    "例え.テスト", "ex ample.com", "", "[", "]", "[::1", "a" * 64 + ".com", "a." * 130 + "com", "%2e%2e",
])
_URLISH = st.builds(
    lambda scheme, userinfo, host, port, path: f"{scheme}{userinfo}{host}{port}{path}",
    st.sampled_from(["http://", "https://", "HTTP://", "hTtPs://", "ftp://", "file://", "gopher://", "//",
                     "", "http:/", "http:", "javascript:", "http:\\\\", " http://", "http\t://"]),
    st.sampled_from(["", "", "", "u:p@", "@", ":@", "u@h@"]),
    st.one_of(_HOSTS, st.from_regex(r"[a-z0-9.\-_%\[\]:@]{0,30}", fullmatch=True), st.text(max_size=20)),
    st.one_of(st.just(""), st.integers(-1, 70000).map(lambda p: f":{p}"), st.text(max_size=5).map(":".__add__)),
    st.one_of(st.just("/"), st.just(""), st.text(max_size=60).map("/".__add__),
              st.from_regex(r"/[\x00-\x7f]{0,40}", fullmatch=True)),
)
_LONG = st.builds(lambda char, n: "http://example.com/" + char * n, st.characters(), st.integers(3900, 9000))
# Mostly acceptable URLs whose paths and queries hold any printable text (non-ASCII included), so
# that the queued branch, and what the databases make of such text, is exercised as much as refusal.
_PRINTABLE = st.text(st.characters(exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp")), max_size=80)
_PLAUSIBLE = st.builds(
    lambda scheme, host, port, path, query: f"{scheme}://{host}{port}/{path}{query}",
    st.sampled_from(["http", "https", "HTTPS"]),
    st.one_of(st.sampled_from(["127.0.0.2", "cdn.example.com", "p16-sign-va.tiktokcdn.com", "[2001:4860::1]",
                               "xn--nxasmq6b.com", "例え.テスト", "a_b.example"]),
              st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9-]{1,10}){1,3}", fullmatch=True)),
    st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}")),
    _PRINTABLE,
    st.one_of(st.just(""), _PRINTABLE.map("?".__add__), st.integers(0, 2**34).map(lambda n: f"?x-expires={n}")),
)
_ANY_TEXT = st.one_of(st.text(), st.text(min_size=200, max_size=2000), _URLISH, _LONG, _PLAUSIBLE,
                      st.from_regex(r"\Ahttps?://[^/]{0,25}/.{0,25}\Z"))


def test_any_text_is_queued_or_refused_with_our_error(make_settings: SettingsFactory) -> None:
    # One MediaCache and one event loop for all examples: hypothesis runs the inner function many
    # times, and a database engine per example would make this slow without testing more.
    with asyncio.Runner() as runner:
        cache = MediaCache(make_settings(**HOSTILE_SETTINGS))
        queued: list[uuid.UUID] = []
        refused: list[str] = []

        async def one(text: str) -> None:
            try:
                asset_id = await cache.cache_image(text)
            except InvalidURLError as exc:
                assert exc.url == text and exc.kind is ErrorKind.INVALID_URL
                refused.append(text)
                return
            assert isinstance(asset_id, uuid.UUID)
            rec = await cache.get_asset(asset_id)
            # A text with the source key of one queued before lands on that asset (deduplication).
            assert rec is not None and rec.status is CacheStatus.PENDING
            assert rec.original_url == text or rec.source_key == source_key(text, cache.settings.source_key_rules)
            if asset_id not in queued:
                queued.append(asset_id)

        @hypothesis.settings(max_examples=200, deadline=None)
        @hypothesis.given(_ANY_TEXT)
        def check(text: str) -> None:
            runner.run(one(text))

        try:
            check()
            # Both outcomes were exercised, so the property says something about each.
            assert len(queued) >= 10 and len(refused) >= 10, (len(queued), len(refused))
            # Refused texts wrote nothing: the database and the queue hold exactly the queued ones.
            stats = runner.run(cache.cache_stats())
            assert stats.total == stats.pending == len(queued)
            assert runner.run(cache.queue_stats()).waiting == len(queued)
        finally:
            runner.run(cache.close())
