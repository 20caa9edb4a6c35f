"""The byte budget (trim) and the usage report, through the library, the command line and the HTTP service."""

from __future__ import annotations

import json
import random

import pytest

from mediacache.cli.sizes import parse_size
from mediacache.domain import CacheStatus
from mediacache.fetching.source_key import SourceKeyRules, source_key
from mediacache.service import MediaCache
from tests.support.api import running_api
from tests.support.origin import Origin
from tests.support.processes import acli
from tests.support.services import SettingsFactory, WorkerFactory
from tests.support.waiting import wait_until


async def _cached(cache: MediaCache, urls: list[str]) -> list:
    ids = []
    for url in urls:  # one at a time, so their last request times are in this order
        ids.append(await cache.cache_image(url))

    async def done() -> bool:
        return (await cache.cache_stats()).cached == len(set(ids))
    await wait_until(done, what=f"{len(urls)} cached assets")
    return ids


async def test_trim_removes_least_recently_requested_first_and_never_a_referenced_asset(
        cache: MediaCache, start_worker: WorkerFactory, origin: Origin) -> None:
    await start_worker()
    n = random.randrange(10**7)
    urls = [origin.url(f"/media/{n + i}.jpg?size=10000") for i in range(5)]
    ids = await _cached(cache, urls)
    assert await cache.cache_image(urls[0]) == ids[0]  # requested again: now the youngest but one
    await cache.save_carousel(title="t", author_avatar_url=urls[1])  # referenced (and the youngest)
    assert await cache.stored_bytes() == 50000

    assert await cache.trim(max_bytes=25000) == 3
    assert await cache.stored_bytes() <= 25000
    left = await cache.get_assets(ids)
    assert set(left) == {ids[0], ids[1]}
    assert await cache.get_url(ids[2], urls[2]) == urls[2]  # a removed id resolves to its original URL

    # Nothing fits in 0 bytes, but the referenced asset stays.
    assert await cache.trim(max_bytes=0) == 1
    assert set(await cache.get_assets(ids)) == {ids[1]}
    assert await cache.trim(max_bytes=0) == 0


async def test_usage_groups_by_status_type_host_and_age(
        cache: MediaCache, start_worker: WorkerFactory, origin: Origin) -> None:
    await start_worker()
    n = random.randrange(10**7)
    await _cached(cache, [origin.url(f"/media/{n}.jpg?size=1000"), origin.url(f"/big/{n}.mp4?size=3000")])
    failed = await cache.cache_image(origin.url(f"/status/404?n={n}"))

    async def settled() -> bool:
        rec = await cache.get_asset(failed)
        return rec is not None and rec.status is CacheStatus.FAILED
    await wait_until(settled, what="the FAILED asset")
    report = await cache.usage()
    assert report.assets == 3 and report.stored_bytes == 4000 and report.bucket is None
    assert (report.by_status["CACHED"].assets, report.by_status["CACHED"].bytes) == (2, 4000)
    assert report.by_status["FAILED"].assets == 1
    assert report.by_content_type["image/jpeg"].bytes == 1000 and report.by_content_type["video/mp4"].bytes == 3000
    assert report.by_host[f"127.0.0.1:{origin.port}"].assets == 3
    assert report.by_age["0-1d"].assets == 3 and report.by_age["older"].assets == 0
    assert list(report.by_age) == ["0-1d", "1-7d", "7-30d", "older"]


async def test_usage_and_trim_on_the_command_line_and_over_http(
        make_settings: SettingsFactory, start_worker: WorkerFactory, cache: MediaCache, origin: Origin) -> None:
    await start_worker()
    n = random.randrange(10**7)
    await _cached(cache, [origin.url(f"/alias/x{i}/{n}.jpg?size=2000") for i in range(3)])
    settings = cache.settings

    done = await acli(settings, "usage", "--json", "--check-bucket")
    assert done.returncode == 0, done
    report = json.loads(done.stdout)
    assert (report["stored_objects"], report["bytes_not_stored"]) == (1, 4000)
    assert report["bucket"] == {"orphan_objects": 0, "orphan_bytes": 0, "missing_objects": 0, "missing_bytes": 0}

    async with running_api(make_settings, run_worker=False) as api:
        body = (await api.client.get("/api/usage")).json()
        assert body["logical_bytes"] == 6000 and body["bucket"] is None
        page = (await api.client.get("/")).text
        assert 'data-field="bytes_not_stored">3.9 KiB<' in page
        assert (await api.client.get("/api/dashboard")).json()["bytes_not_stored"] == 4000

    bad = await acli(settings, "trim", "--max-bytes", "lots")
    assert bad.returncode != 0 and "500MB" in bad.stderr
    done = await acli(settings, "trim", "--max-bytes", "1KiB")
    assert done.returncode == 0 and "removed 3 assets" in done.stdout, done
    assert (await cache.cache_stats()).total == 0


@pytest.mark.parametrize(("text", "expected"), [
    ("1024", 1024), ("500MB", 500_000_000), ("50GiB", 50 * 1024**3), ("1.5 kb", 1500), ("2G", 2 * 1024**3),
])
def test_sizes_as_written_on_the_command_line(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "5 parsecs", "-1", "1e9"])
def test_a_bad_size_names_the_value_and_the_forms(text: str) -> None:
    with pytest.raises(ValueError, match="500MB"):
        parse_size(text)


def test_source_keys_drop_signing_parameters_only() -> None:
    rules = SourceKeyRules()
    same = [
        "https://p16-sign-va.tiktokcdn.com/obj/avatar.jpeg?x-expires=1700000000&x-signature=a%2Fb%3D",
        "https://P16-SIGN-VA.tiktokcdn.com:443/obj/avatar.jpeg?x-signature=zzz&x-expires=1800000000#top",
        "https://p16-sign-va.tiktokcdn.com/obj/avatar.jpeg?x-orig-expires=1&x-orig-sign=2",
    ]
    assert len({source_key(u, rules) for u in same}) == 1
    assert source_key("https://scontent.cdninstagram.com/v/p.jpg?stp=dst-jpg&_nc_ht=x&_nc_cat=1&oh=00_a&oe=6A00F000",
                      rules) == "https://scontent.cdninstagram.com/v/p.jpg?stp=dst-jpg"
    assert source_key("https://b.s3.amazonaws.com/k.mp4?X-Amz-Date=20260101T000000Z&X-Amz-Signature=s&v=2",
                      rules) == "https://b.s3.amazonaws.com/k.mp4?v=2"
    # Parameters that select content are kept.
    assert source_key("https://cdn.example.com/a.jpg?w=320", rules) != source_key("https://cdn.example.com/a.jpg?w=640",
                                                                                   rules)
    # Configurable: replace the list, or add to it with a leading +.
    assert source_key("https://e.com/a.jpg?w=1&sig=2", SourceKeyRules.parse("sig")) == "https://e.com/a.jpg?w=1"
    extended = SourceKeyRules.parse("+token")
    assert source_key("https://e.com/a.jpg?token=1&x-expires=2&w=3", extended) == "https://e.com/a.jpg?w=3"
