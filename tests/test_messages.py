"""What people read: no credentials echoed, no phrase said twice, sizes in units people read."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from mediacache.domain import CacheStatus, ErrorKind, human_bytes
from mediacache.errors import FetchError, InvalidURLError, shown_url
from mediacache.fetching.fetch import Fetcher
from mediacache.fetching.urls import check_redirect, validate_url
from mediacache.service import MediaCache
from mediacache.settings import load_settings
from tests.support.origin import Origin
from tests.support.ports import free_port
from tests.support.services import WorkerFactory
from tests.support.waiting import wait_until


@pytest.mark.parametrize("url", [
    "http://user:hunter2pw@example.com/x.jpg",
    "ftp://user:hunter2pw@example.com/x.jpg",
    "http://user:hunter2pw@[::1/x.jpg",          # unparseable: masked all the same
    "http://user:hunter2pw@exa mple.com/x.jpg",
])
def test_a_refused_url_never_echoes_its_password(url: str) -> None:
    with pytest.raises(InvalidURLError) as info:
        validate_url(url)
    assert "hunter2pw" not in str(info.value) and "user:***@" in str(info.value)


@pytest.mark.parametrize("location", ["http://u:hunter2pw@example.com/y", "//u:hunter2pw@0177.0.0.1/y"])
def test_a_refused_redirect_never_echoes_its_password(location: str) -> None:
    with pytest.raises((InvalidURLError, FetchError)) as info:
        check_redirect(httpx.URL("http://example.com/"), location)
    assert "hunter2pw" not in str(info.value)


def test_shown_url_keeps_what_is_not_a_password() -> None:
    assert shown_url("http://e.com/a:b@c?q=x:y@z") == "http://e.com/a:b@c?q=x:y@z"
    assert shown_url("https://token@e.com/x") == "https://token@e.com/x"
    assert shown_url("http://u:p@h/" + "x" * 500).endswith("...")


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1024, 600 * 2**20, 512 * 2**20, 3 * 2**40)] == [
        "0 B", "1023 B", "1.0 KiB", "600.0 MiB", "512.0 MiB", "3.0 TiB"]


async def test_a_connect_failure_says_cannot_connect_once(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    fetcher = Fetcher(load_settings(env_file=None, allowed_networks="127.0.0.0/8", data_dir=tmp_path))
    try:
        with pytest.raises(FetchError) as info:
            async with fetcher.open(f"http://127.0.0.1:{port}/x.jpg"):
                pass
    finally:
        await fetcher.close()
    message = str(info.value)
    assert info.value.kind is ErrorKind.TRANSIENT
    assert message.count("cannot connect to") == 1, message
    assert f"127.0.0.1:{port}" in message


async def test_sizes_over_the_limit_are_shown_in_units_too(origin: Origin, tmp_path: Path) -> None:
    fetcher = Fetcher(load_settings(env_file=None, allowed_networks="127.0.0.0/8", data_dir=tmp_path,
                                    max_bytes=512 * 1024))
    try:
        with pytest.raises(FetchError) as info:
            async with fetcher.open(origin.url(f"/media/1.jpg?size={600 * 1024}")):
                pass
    finally:
        await fetcher.close()
    assert info.value.kind is ErrorKind.TOO_LARGE
    assert "614400 bytes (600.0 KiB), over the limit of 524288 bytes (512.0 KiB)" in str(info.value)


async def test_attempts_count_the_current_try_not_every_retry(cache: MediaCache, start_worker: WorkerFactory,
                                                              origin: Origin) -> None:
    await start_worker()
    path = f"/status/404?try={uuid.uuid4().hex}"
    asset_id = await cache.cache_image(origin.url(path))

    async def failed_after(tries: int) -> bool:
        rec = await cache.get_asset(asset_id)
        return rec is not None and rec.status is CacheStatus.FAILED and len(origin.hits(path)) == tries
    await wait_until(lambda: failed_after(1), what="the 404 to fail")
    for tries in (2, 3):
        assert await cache.retry_failed() == 1
        rec = await cache.get_asset(asset_id)
        # Its count restarted. (A local 404 is quick: the worker may have claimed it, or even failed
        # it again, by now.)
        assert rec is not None and rec.attempts <= 1
        await wait_until(lambda t=tries: failed_after(t), what=f"try {tries} of the 404 to fail")
    rec = await cache.get_asset(asset_id)
    # A 404 is final: one attempt per try, however often it was retried (this was 3 before).
    assert rec is not None and rec.attempts == 1
    failures = await cache.recent_failures()
    assert [f.attempts for f in failures] == [1]
