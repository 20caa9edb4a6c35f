"""AppTables: the application tables' use cases, a part that MediaCache delegates to.

It uses the asset use cases only through MediaCache's public methods (`cache_images`, `resolve_media`,
`get_assets`); its own queries live in `apptables.repository` and `apptables.refs_repository`.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from mediacache.apptables.backfill import DEFAULT_BATCH_ROWS, backfill_legacy_keys
from mediacache.apptables.media import MediaPlan, keys_to_check
from mediacache.apptables.refs_repository import RefsRepository
from mediacache.apptables.repository import AppRepository, Row
from mediacache.db.columns import utcnow
from mediacache.domain import CacheStatus, parse_asset_id
from mediacache.errors import AssetStateError, InvalidArgumentError, RecordNotFoundError
from mediacache.records import (
    BackfillReport,
    CarouselRecord,
    ImageRecord,
    MediaInfo,
    SlideRecord,
    TikTokPostPage,
    TikTokPostRecord,
    TikTokProfileRecord,
)
from mediacache.storage.base import ObjectStore

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from mediacache.records import AssetRecord, MediaInfo
    from mediacache.settings import Settings


class AssetUseCases(Protocol):
    """The asset use cases AppTables needs: MediaCache's public methods, and nothing else of it.

    A protocol rather than an import of MediaCache, which composes AppTables: the dependency runs
    one way only.
    """

    settings: Settings

    async def cache_images(self, urls: Sequence[str]) -> list[uuid.UUID]: ...

    async def get_assets(self, asset_ids: Sequence[str | uuid.UUID]) -> dict[uuid.UUID, AssetRecord]: ...

    async def refresh_source(self, asset_id: str | uuid.UUID, url: str) -> AssetRecord: ...

    async def resolve_media(self, values: Sequence[str | uuid.UUID | None],
                            original_urls: Sequence[str | None]) -> list[tuple[str | None, MediaInfo | None]]: ...

MAX_PAGE = 100


class _Resolver:
    """Gathers every key of a page, so that one `get_urls` call (one query) resolves them all."""

    def __init__(self) -> None:
        self.values: list[str | None] = []
        self.originals: list[str | None] = []

    def add(self, key: str | None, original_url: str | None) -> int:
        self.values.append(key)
        self.originals.append(original_url)
        return len(self.values) - 1


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgumentError(f"{what} must be a non-empty string, not {value!r}")
    return value.strip()


def _field(row: Row | None, name: str) -> Any:
    return row[name] if row is not None else None


def _previous(rows: Sequence[Row], i: int, url_field: str, key_field: str) -> tuple[str | None, str | None]:
    """The (original URL, key) that position `i` held before this save, if it existed."""
    return (rows[i][url_field], rows[i][key_field]) if i < len(rows) else (None, None)


def _image(row: Row, url: str | None, media: MediaInfo | None) -> ImageRecord:
    """An image slot: the size the application saved, else the one the cached file has."""
    width, height = row["width"], row["height"]
    if (width is None or height is None) and media is not None:
        width, height = media.width, media.height
    return ImageRecord(position=row["position"], image_key=row["image_key"], url=url, width=width, height=height,
                       media=media)


def _dimension(image: Mapping[str, Any], name: str) -> int | None:
    value = image.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgumentError(f"image {name} must be a whole number of pixels (0 or more) or None, not {value!r}")
    return value


class AppTables:
    """Carousels and TikTok posts whose `*_key` columns hold cache asset ids (or legacy storage keys)."""

    def __init__(self, cache: AssetUseCases, engine: AsyncEngine, store: ObjectStore) -> None:
        self._cache = cache
        self._store = store
        display = cache.settings.database_display
        self._rows = AppRepository(engine, display)
        self._refs = RefsRepository(engine, display)

    async def referenced(self, asset_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Which of `asset_ids` some application row references: the one question cleanup asks."""
        return await self._refs.referenced_among(asset_ids)

    async def _usable_keys(self, keys: Sequence[str | None]) -> set[str]:
        """The keys a re-save may keep: legacy keys, and ids of assets that exist and have not FAILED."""
        return (await self._media_keys(keys))[0]

    async def _media_keys(self, keys: Sequence[str | None]) -> tuple[set[str], set[str]]:
        """The keys a re-save may keep (as `_usable_keys`), and the asset ids that may take a new URL
        for the same media: PENDING, FAILED, or not CACHED with an expired source link."""
        parsed = {key: parse_asset_id(key) for key in keys_to_check(keys)}
        found = await self._cache.get_assets([i for i in parsed.values() if i is not None])
        usable: set[str] = set()
        refreshable: set[str] = set()
        now = utcnow()
        for key, asset_id in parsed.items():
            if asset_id is None:
                usable.add(key)
                continue
            asset = found.get(asset_id)
            if asset is None:
                continue
            if asset.status is not CacheStatus.FAILED:
                usable.add(key)
            expired = asset.source_expires_at is not None and asset.source_expires_at <= now
            if asset.status in (CacheStatus.PENDING, CacheStatus.FAILED) or (
                    expired and asset.status is not CacheStatus.CACHED):
                refreshable.add(key)
        return usable, refreshable

    async def _refresh(self, plan: MediaPlan) -> None:
        """New URLs for the same media, under the same ids; an asset caught mid-download keeps its URL."""
        for key, url in plan.refreshes:
            with contextlib.suppress(AssetStateError):
                await self._cache.refresh_source(key, url)

    # ---- TikTok --------------------------------------------------------------------------

    async def save_tiktok_post(
        self, *, tiktok_id: str, username: str, description: str | None = None,
        posted_at: datetime | None = None, video_url: str | None = None, cover_url: str | None = None,
        music_url: str | None = None, images: Sequence[Mapping[str, Any]] = (), avatar_url: str | None = None,
        nickname: str | None = None, tiktok_user_id: str | None = None,
    ) -> TikTokPostRecord:
        """Upserts the author's profile (by username) and the post (by TikTok id) from scraped data.

        Every media URL that needs downloading goes out in one `cache_images` call (one transaction,
        one addBulk), and the returned ids are stored in the `*_key` columns. Saving the same post
        again updates it and keeps media already queued or cached (see `apptables.media`). The post
        is saved whole (a media URL left out clears that slot); the profile keeps the nickname,
        user id and avatar it has when a save does not give them.
        """
        tiktok_id = _text(tiktok_id, "tiktok_id")
        username = _text(username, "username").removeprefix("@")
        images = list(images)
        post, profile = await self._rows.tiktok_state(tiktok_id, username)
        old_images: list[Row] = post["images"] if post else []
        usable, refreshable = await self._media_keys(
            ([post[f"{m}_key"] for m in ("video", "cover", "music")] if post else [])
            + [img["image_key"] for img in old_images] + ([profile["avatar_key"]] if profile else []))
        plan = MediaPlan(usable, signed_links=True, refreshable_keys=refreshable)
        slots = {m: plan.slot(url, _field(post, f"{m}_original_url"), _field(post, f"{m}_key"))
                 for m, url in (("video", video_url), ("cover", cover_url), ("music", music_url))}
        image_slots = [plan.slot(img.get("url"), *_previous(old_images, i, "original_url", "image_key"))
                       for i, img in enumerate(images)]
        avatar = plan.slot(avatar_url, _field(profile, "avatar_original_url"), _field(profile, "avatar_key"))
        image_rows = [{"position": i, "original_url": img.get("url"), "width": _dimension(img, "width"),
                       "height": _dimension(img, "height")} for i, img in enumerate(images)]
        ids = await self._cache.cache_images(plan.urls) if plan.urls else []
        await self._refresh(plan)

        profile_values: Row = {"username": username}
        for name, value in (("tiktok_user_id", tiktok_user_id), ("nickname", nickname)):
            if value is not None:
                profile_values[name] = value
        if avatar_url:
            profile_values.update(avatar_original_url=avatar_url, avatar_key=plan.key(avatar, ids))
        post_values: Row = {"tiktok_id": tiktok_id, "description": description, "posted_at": posted_at}
        for media, url in (("video", video_url), ("cover", cover_url), ("music", music_url)):
            post_values[f"{media}_original_url"] = url or None
            post_values[f"{media}_key"] = plan.key(slots[media], ids)
        for row, slot in zip(image_rows, image_slots, strict=True):
            row["image_key"] = plan.key(slot, ids)
        post_id = await self._rows.upsert_tiktok_post(profile_values, post_values, image_rows)
        saved = await self.get_tiktok_post(post_id)
        if saved is None:  # deleted between the upsert and the read: rare, and worth saying plainly
            raise RecordNotFoundError(f"TikTok post {tiktok_id} was deleted while it was being saved")
        return saved

    async def get_tiktok_post(self, post_id: int) -> TikTokPostRecord | None:
        """The post (by our id) with its profile and images, every key resolved; None if unknown."""
        rows = await self._rows.posts_page(limit=1, post_id=post_id)
        return (await self._post_records(rows))[0] if rows else None

    async def list_tiktok_posts(self, limit: int = 20, cursor: int | None = None,
                                username: str | None = None) -> TikTokPostPage:
        """Posts newest first, `limit` at a time after `cursor`: one query for the rows and one for
        the assets, whatever the page size."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidArgumentError(f"limit={limit}: ask for 1 to {MAX_PAGE} posts per page")
        rows = await self._rows.posts_page(limit=limit + 1, before_id=cursor,
                                              username=username.removeprefix("@") if username else None)
        more = len(rows) > limit
        items = await self._post_records(rows[:limit])
        return TikTokPostPage(items=items, next_cursor=items[-1].id if more and items else None)

    async def _post_records(self, rows: Sequence[Row]) -> list[TikTokPostRecord]:
        r = _Resolver()
        slots = [({m: r.add(row[f"{m}_key"], row[f"{m}_original_url"]) for m in ("video", "cover", "music")},
                  r.add(row["avatar_key"], row["avatar_original_url"]),
                  [r.add(img["image_key"], img["original_url"]) for img in row["images"]]) for row in rows]
        resolved = await self._cache.resolve_media(r.values, r.originals)
        urls = [url for url, _ in resolved]
        info = [media for _, media in resolved]
        out = []
        for row, (media, avatar, images) in zip(rows, slots, strict=True):
            profile = TikTokProfileRecord(
                id=row["profile_id"], username=row["username"], tiktok_user_id=row["tiktok_user_id"],
                nickname=row["nickname"], avatar_key=row["avatar_key"], avatar_url=urls[avatar],
                created_at=row["profile_created_at"], updated_at=row["profile_updated_at"],
                avatar_media=info[avatar])
            out.append(TikTokPostRecord(
                id=row["id"], tiktok_id=row["tiktok_id"], description=row["description"], posted_at=row["posted_at"],
                profile=profile, video_key=row["video_key"], video_url=urls[media["video"]],
                cover_key=row["cover_key"], cover_url=urls[media["cover"]], music_key=row["music_key"],
                music_url=urls[media["music"]],
                images=[_image(img, urls[i], info[i]) for img, i in zip(row["images"], images, strict=True)],
                created_at=row["created_at"], updated_at=row["updated_at"], video_media=info[media["video"]],
                cover_media=info[media["cover"]], music_media=info[media["music"]]))
        return out

    # ---- carousels -----------------------------------------------------------------------

    async def save_carousel(
        self, *, title: str | None = None, author_name: str | None = None, author_avatar_url: str | None = None,
        images: Sequence[Mapping[str, Any]] = (), slides: Sequence[Mapping[str, Any]] = (),
        carousel_id: int | None = None,
    ) -> CarouselRecord:
        """Creates a carousel (no `carousel_id`) or replaces one's data, images and slides.

        `images`: `{"url", "width", "height"}`; `slides`: `{"text", "background_image_url"}`, each in
        display order. Media URLs are queued in one `cache_images` call; on an update, a slot whose
        URL is unchanged keeps its asset.
        """
        images, slides = list(images), list(slides)
        old = await self._rows.carousel(carousel_id) if carousel_id is not None else None
        if carousel_id is not None and old is None:
            raise RecordNotFoundError(f"no carousel with id {carousel_id}: save it without carousel_id to create one")
        old_images: list[Row] = old["images"] if old else []
        old_slides: list[Row] = old["slides"] if old else []
        usable = await self._usable_keys(([old["author_avatar_key"]] if old else [])
                                         + [i["image_key"] for i in old_images]
                                         + [s["background_image_key"] for s in old_slides])
        plan = MediaPlan(usable, signed_links=False)
        avatar = plan.slot(author_avatar_url, _field(old, "author_avatar_original_url"),
                           _field(old, "author_avatar_key"))
        image_slots = [plan.slot(img.get("url"), *_previous(old_images, i, "original_url", "image_key"))
                       for i, img in enumerate(images)]
        slide_slots = [plan.slot(s.get("background_image_url"), *_previous(
            old_slides, i, "background_image_original_url", "background_image_key")) for i, s in enumerate(slides)]
        image_rows = [{"position": i, "original_url": img.get("url"), "width": _dimension(img, "width"),
                       "height": _dimension(img, "height")} for i, img in enumerate(images)]
        ids = await self._cache.cache_images(plan.urls) if plan.urls else []

        values: Row = {"title": title, "author_name": author_name, "author_avatar_original_url": author_avatar_url,
                       "author_avatar_key": plan.key(avatar, ids)}
        for row, slot in zip(image_rows, image_slots, strict=True):
            row["image_key"] = plan.key(slot, ids)
        slide_rows = [{"position": i, "text": s.get("text"), "background_image_original_url": s.get(
            "background_image_url"), "background_image_key": plan.key(slot, ids)}
            for i, (s, slot) in enumerate(zip(slides, slide_slots, strict=True))]
        saved_id = await self._rows.save_carousel(carousel_id, values, image_rows, slide_rows)
        saved = await self.get_carousel(saved_id)
        if saved is None:
            raise RecordNotFoundError(f"carousel {saved_id} was deleted while it was being saved")
        return saved

    async def get_carousel(self, carousel_id: int) -> CarouselRecord | None:
        """The carousel with its images and slides, every key resolved in one `get_urls`; None if unknown."""
        row = await self._rows.carousel(carousel_id)
        if row is None:
            return None
        r = _Resolver()
        avatar = r.add(row["author_avatar_key"], row["author_avatar_original_url"])
        images = [r.add(i["image_key"], i["original_url"]) for i in row["images"]]
        slides = [r.add(s["background_image_key"], s["background_image_original_url"]) for s in row["slides"]]
        resolved = await self._cache.resolve_media(r.values, r.originals)
        urls = [url for url, _ in resolved]
        info = [media for _, media in resolved]
        return CarouselRecord(
            id=row["id"], title=row["title"], author_name=row["author_name"],
            author_avatar_key=row["author_avatar_key"], author_avatar_url=urls[avatar],
            images=[_image(i, urls[n], info[n]) for i, n in zip(row["images"], images, strict=True)],
            slides=[SlideRecord(position=s["position"], text=s["text"], background_image_key=s["background_image_key"],
                                background_image_url=urls[n], background_image_media=info[n])
                    for s, n in zip(row["slides"], slides, strict=True)],
            created_at=row["created_at"], updated_at=row["updated_at"], author_avatar_media=info[avatar])

    # ---- legacy keys -------------------------------------------------------------------

    async def backfill_legacy_keys(self, *, dry_run: bool = False, batch_rows: int = DEFAULT_BATCH_ROWS,
                                   on_total: Callable[[int], None] | None = None,
                                   on_advance: Callable[[int], None] | None = None) -> BackfillReport:
        """Turns every legacy storage key in a `*_key` column into a CACHED asset's id (see `apptables.backfill`)."""
        return await backfill_legacy_keys(self._store, self._refs, dry_run=dry_run, batch_rows=batch_rows,
                                          on_total=on_total, on_advance=on_advance)
