"""The application tables over HTTP: TikTok posts and carousels with their media resolved to stored copies."""

from __future__ import annotations

from tests.support.api import Api, running_api
from tests.support.origin import Origin, body
from tests.support.services import SettingsFactory


async def test_tiktok_posts_and_carousels_come_back_with_stored_media(api: Api, origin: Origin) -> None:
    post = await api.cache.save_tiktok_post(
        tiktok_id="7300000000000000001", username="@someone", description="a post",
        video_url=origin.url("/big/1.mp4?size=30000"), cover_url=origin.url("/media/71.jpg?size=2000"),
        images=[{"url": origin.url("/media/72.jpg?size=3000"), "width": 1080, "height": 1920}],
        avatar_url=origin.url("/media/73.jpg?size=1000"))
    carousel = await api.cache.save_carousel(
        title="three slides", author_name="me", author_avatar_url=origin.url("/media/74.jpg?size=1100"),
        images=[{"url": origin.url("/media/75.jpg?size=1200"), "width": 10, "height": 20}],
        slides=[{"text": "hello", "background_image_url": origin.url("/media/76.jpg?size=1300")}])
    ids = [k for k in (post.video_key, post.cover_key, post.profile.avatar_key, post.images[0].image_key,
                       carousel.author_avatar_key, carousel.images[0].image_key,
                       carousel.slides[0].background_image_key) if k]
    assert len(ids) == 7
    await api.wait_settled(ids)

    got = (await api.client.get(f"/api/tiktok/posts/{post.id}")).json()
    assert got["tiktok_id"] == "7300000000000000001" and got["profile"]["username"] == "someone"
    for url in (got["video_url"], got["cover_url"], got["profile"]["avatar_url"], got["images"][0]["url"]):
        assert url.startswith(api.url + "/files/media/"), url
    assert (await api.client.get(got["cover_url"])).content == body("media", 71, 2000)
    assert got["images"][0]["width"] == 1080

    page = (await api.client.get("/api/tiktok/posts", params={"limit": 10})).json()
    assert [p["id"] for p in page["items"]] == [post.id] and page["next_cursor"] is None
    assert (await api.client.get("/api/tiktok/posts", params={"username": "nobody"})).json()["items"] == []

    shown = (await api.client.get(f"/api/carousels/{carousel.id}")).json()
    assert shown["title"] == "three slides"
    assert (await api.client.get(shown["slides"][0]["background_image_url"])).content == body("media", 76, 1300)
    assert shown["images"][0]["url"].startswith(api.url + "/files/media/")

    for path in (f"/api/tiktok/posts/{post.id + 1000}", f"/api/carousels/{carousel.id + 1000}"):
        missing = await api.client.get(path)
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    for path in ("/api/tiktok/posts/abc", "/api/carousels/0", f"/api/carousels/{2**64}", "/api/tiktok/posts/-1"):
        assert (await api.client.get(path)).status_code == 422, path
    for params in ({"limit": 0}, {"limit": 1000}, {"cursor": "x"}, {"cursor": str(2**70)}, {"username": ""}):
        assert (await api.client.get("/api/tiktok/posts", params=params)).status_code == 422, params

    # Cleanup keeps what application rows point at, unless told otherwise.
    assert (await api.client.post("/api/assets/cleanup", json={"days": 0})).json() == {"removed": 0}
    removed = await api.client.post("/api/assets/cleanup", json={"days": 0, "include_referenced": True})
    assert removed.json() == {"removed": 7}


async def test_application_records_need_the_token_when_reads_are_protected(make_settings: SettingsFactory) -> None:
    async with running_api(make_settings, run_worker=False, api_token="t", api_token_reads=True) as api:
        for path in ("/api/tiktok/posts", "/api/tiktok/posts/1", "/api/carousels/1"):
            assert (await api.client.get(path)).status_code == 401, path
            assert (await api.client.get(path, headers={"Authorization": "Bearer t"})).status_code in (200, 404)
