"""The application tables on SQLite and PostgreSQL: saving queues media, reading resolves it, in few queries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import func, select, update

from mediacache import RecordNotFoundError, TikTokPostRecord
from mediacache.apptables.models import posts, profiles
from mediacache.domain import CacheStatus
from mediacache.errors import InvalidURLError
from mediacache.service import MediaCache
from tests.support.origin import Origin
from tests.support.queries import count_queries
from tests.support.services import WorkerFactory
from tests.support.waiting import wait_until


def media_urls(origin: Origin, n: int, query: str = "") -> dict[str, Any]:
    """The scraped media of post number `n`: video, cover, music, one photo image and an avatar."""
    return {
        "video_url": origin.url(f"/big/{n}0.mp4?size=30000{query}"),
        "cover_url": origin.url(f"/media/{n}1.jpg?size=2000{query}"),
        "music_url": origin.url(f"/media/{n}2.jpg?size=2100{query}"),
        "images": [{"url": origin.url(f"/media/{n}3.jpg?size=2200{query}"), "width": 1080, "height": 1920}],
        "avatar_url": origin.url(f"/media/{n}4.jpg?size=2300{query}"),
    }


def post_keys(post: TikTokPostRecord) -> list[str | None]:
    return [post.video_key, post.cover_key, post.music_key, post.images[0].image_key, post.profile.avatar_key]


def post_urls(post: TikTokPostRecord) -> list[str | None]:
    return [post.video_url, post.cover_url, post.music_url, post.images[0].url, post.profile.avatar_url]


async def _all_cached(cache: MediaCache, keys: Sequence[str | None]) -> bool:
    for key in keys:
        rec = await cache.get_asset(str(key))
        if rec is None or rec.status is not CacheStatus.CACHED:
            return False
    return True


async def test_saving_a_post_queues_its_five_media_urls_in_one_batch_into_the_right_columns(
        cache: MediaCache, origin: Origin, monkeypatch: pytest.MonkeyPatch) -> None:
    batches: list[int] = []
    add_bulk = cache.backends.queue.add_bulk

    async def counting_add_bulk(items: Any) -> Any:
        batches.append(len(items))
        return await add_bulk(items)

    monkeypatch.setattr(cache.backends.queue, "add_bulk", counting_add_bulk)
    media = media_urls(origin, 1)
    post = await cache.save_tiktok_post(tiktok_id="7300000000000000001", username="@alice", nickname="Alice",
                                        tiktok_user_id="6800000000000000001", description="first", **media)

    assert batches == [5]  # one addBulk for all five
    assert post.tiktok_id == "7300000000000000001" and post.description == "first"
    assert post.profile.username == "alice" and post.profile.nickname == "Alice"
    originals = [media["video_url"], media["cover_url"], media["music_url"], media["images"][0]["url"],
                 media["avatar_url"]]
    keys = post_keys(post)
    assert len(set(keys)) == 5
    for key, original in zip(keys, originals, strict=True):
        rec = await cache.get_asset(str(key))
        assert rec is not None and rec.status is CacheStatus.PENDING and rec.original_url == original
    assert (await cache.cache_stats()).pending == 5
    assert (await cache.queue_stats()).waiting == 5
    # Until the worker has run, every key resolves to the URL it was scraped from.
    assert post_urls(post) == originals
    assert (post.images[0].width, post.images[0].height, post.images[0].position) == (1080, 1920, 0)
    assert await cache.get_tiktok_post(post.id) == post
    assert await cache.get_tiktok_post(post.id + 1000) is None


async def test_after_the_worker_runs_a_post_resolves_to_storage_urls(
        cache: MediaCache, start_worker: WorkerFactory, origin: Origin) -> None:
    post = await cache.save_tiktok_post(tiktok_id="7300000000000000002", username="bob", **media_urls(origin, 2))
    await start_worker()
    await wait_until(lambda: _all_cached(cache, post_keys(post)), what="the post's five assets to be cached")

    read = await cache.get_tiktok_post(post.id)
    assert read is not None and post_keys(read) == post_keys(post)
    base = cache.settings.public_base_url
    for key, url in zip(post_keys(read), post_urls(read), strict=True):
        assert url is not None and url.startswith(f"{base}/files/media/{key}/"), url


async def test_saving_the_same_post_again_updates_it_and_keeps_media_already_queued(
        cache: MediaCache, start_worker: WorkerFactory, origin: Origin) -> None:
    first = await cache.save_tiktok_post(tiktok_id="7300000000000000003", username="carol", description="v1",
                                         **media_urls(origin, 3, "&x-expires=1"))
    # TikTok signs its links again on every scrape: same paths, new query strings.
    again = await cache.save_tiktok_post(tiktok_id="7300000000000000003", username="carol", description="v2",
                                         **media_urls(origin, 3, "&x-expires=2"))
    assert again.id == first.id and again.profile.id == first.profile.id and again.description == "v2"
    assert post_keys(again) == post_keys(first)
    assert (await cache.cache_stats()).total == 5
    assert again.cover_url is not None and again.cover_url.endswith("x-expires=2")  # the freshest link

    # A new cover (another path) is queued; the rest stay as they are.
    changed = media_urls(origin, 3, "&x-expires=3")
    changed["cover_url"] = origin.url("/media/399.jpg?size=1999")
    third = await cache.save_tiktok_post(tiktok_id="7300000000000000003", username="carol", **changed)
    assert third.cover_key != first.cover_key
    assert [k for k in post_keys(third) if k != third.cover_key] == [k for k in post_keys(first)
                                                                     if k != first.cover_key]
    assert (await cache.cache_stats()).total == 6

    async with cache.backends.engine.connect() as conn:
        counts = [(await conn.execute(select(func.count()).select_from(t))).scalar_one() for t in (posts, profiles)]
    assert counts == [1, 1]

    # A FAILED asset is queued again from the new URL on the next save.
    failing = media_urls(origin, 3, "&x-expires=4")
    failing["music_url"] = origin.url("/status/404")
    fourth = await cache.save_tiktok_post(tiktok_id="7300000000000000003", username="carol", **failing)
    await start_worker()

    async def music_failed() -> bool:
        rec = await cache.get_asset(str(fourth.music_key))
        return rec is not None and rec.status is CacheStatus.FAILED

    await wait_until(music_failed, what="the 404 music to fail")
    fifth = await cache.save_tiktok_post(tiktok_id="7300000000000000003", username="carol", **failing)
    assert fifth.music_key != fourth.music_key
    assert fifth.video_key == first.video_key


async def test_reading_a_page_of_posts_costs_the_same_queries_for_5_and_for_20(
        cache: MediaCache, origin: Origin) -> None:
    async def save(n: int) -> None:
        await cache.save_tiktok_post(tiktok_id=f"73{n:017d}", username=f"user{n % 3}", **media_urls(origin, 10 + n))

    for n in range(5):
        await save(n)
    async with count_queries(cache) as five:
        page5 = await cache.list_tiktok_posts(limit=5)
    for n in range(5, 20):
        await save(n)
    async with count_queries(cache) as twenty:
        page20 = await cache.list_tiktok_posts(limit=20)

    assert len(page5.items) == 5 and len(page20.items) == 20
    assert all(url for post in page20.items for url in post_urls(post))
    assert len(five) == len(twenty) == 2, (five, twenty)  # the rows, then the assets of every key
    async with count_queries(cache) as one:
        assert await cache.get_tiktok_post(page20.items[0].id) == page20.items[0]
    assert len(one) == 2

    # Newest first, paged with the cursor, filtered by author.
    ids = [p.id for p in page20.items]
    assert ids == sorted(ids, reverse=True)
    first = await cache.list_tiktok_posts(limit=8)
    second = await cache.list_tiktok_posts(limit=8, cursor=first.next_cursor)
    last = await cache.list_tiktok_posts(limit=8, cursor=second.next_cursor)
    assert [p.id for p in first.items + second.items + last.items] == ids
    assert len(last.items) == 4 and last.next_cursor is None
    by_user = await cache.list_tiktok_posts(limit=20, username="@user1")
    assert by_user.items and {p.profile.username for p in by_user.items} == {"user1"}
    with pytest.raises(ValueError, match="limit"):
        await cache.list_tiktok_posts(limit=0)


async def test_a_row_holding_a_legacy_storage_key_resolves_to_that_keys_storage_url(
        cache: MediaCache, origin: Origin) -> None:
    post = await cache.save_tiktok_post(tiktok_id="7300000000000000004", username="dave",
                                        cover_url=origin.url("/media/41.jpg"))
    async with cache.backends.engine.begin() as conn:
        await conn.execute(update(posts).where(posts.c.id == post.id)
                           .values(video_key="tiktok/videos/7300000000000000004.mp4", video_original_url=None))
    read = await cache.get_tiktok_post(post.id)
    assert read is not None and read.video_key == "tiktok/videos/7300000000000000004.mp4"
    base = cache.settings.public_base_url
    assert read.video_url is not None
    assert read.video_url.startswith(f"{base}/files/tiktok/videos/7300000000000000004.mp4?exp="), read.video_url
    assert read.cover_url == origin.url("/media/41.jpg")  # an id, still PENDING
    assert read.music_url is None and read.music_key is None


async def test_a_carousel_saves_queues_and_resolves_its_images_and_slides(
        cache: MediaCache, start_worker: WorkerFactory, origin: Origin) -> None:
    images = [{"url": origin.url(f"/media/5{i}.jpg?size=1800"), "width": 800 + i, "height": 600} for i in range(2)]
    slides = [{"text": "hello", "background_image_url": origin.url("/media/560.jpg?size=1700")},
              {"text": "no picture"}]
    saved = await cache.save_carousel(title="Trip", author_name="Eve", author_avatar_url=origin.url("/media/570.jpg"),
                                      images=images, slides=slides)
    keys = [saved.author_avatar_key, *(i.image_key for i in saved.images), saved.slides[0].background_image_key]
    assert len(set(keys)) == 4 and saved.slides[1].background_image_key is None
    assert (await cache.cache_stats()).pending == 4
    assert [(i.width, i.height) for i in saved.images] == [(800, 600), (801, 600)]

    await start_worker()
    await wait_until(lambda: _all_cached(cache, keys), what="the carousel's assets")
    async with count_queries(cache) as queries:
        read = await cache.get_carousel(saved.id)
    assert read is not None and len(queries) == 4  # carousel, images, slides, assets
    base = cache.settings.public_base_url
    urls = [read.author_avatar_url, *(i.url for i in read.images), read.slides[0].background_image_url]
    assert all(u is not None and u.startswith(f"{base}/files/media/") for u in urls), urls
    assert read.slides[1].text == "no picture" and read.slides[1].background_image_url is None

    # An update keeps every unchanged URL's asset and queues only the new one.
    images[1] = {"url": origin.url("/media/580.jpg?size=1600"), "width": 10, "height": 20}
    updated = await cache.save_carousel(carousel_id=saved.id, title="Trip 2", author_name="Eve",
                                        author_avatar_url=origin.url("/media/570.jpg"), images=images, slides=slides)
    assert updated.id == saved.id and updated.title == "Trip 2"
    assert updated.images[0].image_key == saved.images[0].image_key
    assert updated.images[1].image_key != saved.images[1].image_key
    assert updated.author_avatar_key == saved.author_avatar_key
    assert (await cache.cache_stats()).total == 5

    with pytest.raises(RecordNotFoundError, match="no carousel with id"):
        await cache.save_carousel(carousel_id=saved.id + 1000, title="x")
    assert await cache.get_carousel(saved.id + 1000) is None


async def test_cleanup_keeps_assets_that_rows_reference_and_removes_the_others(
        cache: MediaCache, start_worker: WorkerFactory, origin: Origin) -> None:
    loose = await cache.cache_images([origin.url(f"/media/6{i}.jpg?size=1500") for i in range(3)])
    cover_url = origin.url("/media/631.jpg?size=1500")
    post = await cache.save_tiktok_post(tiktok_id="7300000000000000006", username="frank",
                                        video_url=origin.url("/big/630.mp4?size=20000"), cover_url=cover_url)
    referenced: list[str | None] = [post.video_key, post.cover_key]
    await start_worker()
    await wait_until(lambda: _all_cached(cache, [*map(str, loose), *referenced]), what="five cached assets")
    files = {k: cache.settings.objects_dir / str((await cache.get_asset(str(k))).cache_key)  # type: ignore[union-attr]
             for k in [str(i) for i in loose] + referenced}

    report = await cache.cleanup_report(days=0)
    assert (report.removed, report.kept_referenced, report.not_cleaned) == (3, 2, 0)
    assert report["kept_referenced"] == 2
    assert [await cache.get_asset(i) for i in loose] == [None, None, None]
    assert all(files[k].exists() for k in referenced) and not any(files[str(i)].exists() for i in loose)
    read = await cache.get_tiktok_post(post.id)
    assert read is not None and all(str(u).startswith(f"{cache.settings.public_base_url}/files/media/")
                                    for u in (read.video_url, read.cover_url))

    assert await cache.cleanup(days=0) == 0
    assert await cache.cleanup(days=0, include_referenced=True) == 2
    assert not any(f.exists() for f in files.values())
    read = await cache.get_tiktok_post(post.id)
    # The rows still hold the removed ids; they resolve to the URLs the rows were saved with.
    assert read is not None and read.cover_key == post.cover_key and read.cover_url == cover_url


async def test_bad_input_is_refused_before_anything_is_written(cache: MediaCache, origin: Origin) -> None:
    with pytest.raises(ValueError, match="tiktok_id"):
        await cache.save_tiktok_post(tiktok_id=" ", username="x")
    with pytest.raises(ValueError, match="width"):
        await cache.save_tiktok_post(tiktok_id="1", username="x",
                                     images=[{"url": origin.url("/media/1.jpg"), "width": "wide"}])
    with pytest.raises(InvalidURLError):
        await cache.save_tiktok_post(tiktok_id="1", username="x", video_url="ftp://example.com/v.mp4",
                                     cover_url=origin.url("/media/1.jpg"))
    assert (await cache.cache_stats()).total == 0
    assert (await cache.list_tiktok_posts()).items == []
