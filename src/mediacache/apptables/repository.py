"""Every query on the application tables: TikTok and carousel upserts, and reads of whole pages."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from sqlalchemy import ColumnElement, Insert, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mediacache.apptables.models import carousel_images, carousel_slides, carousels, post_images, posts, profiles
from mediacache.db.columns import utcnow
from mediacache.db.transaction import transaction
from mediacache.errors import RecordNotFoundError

Row = dict[str, Any]

_POST_COLUMNS = [
    posts.c.id, posts.c.tiktok_id, posts.c.profile_id, posts.c.description, posts.c.posted_at,
    posts.c.video_original_url, posts.c.video_key, posts.c.cover_original_url, posts.c.cover_key,
    posts.c.music_original_url, posts.c.music_key, posts.c.created_at, posts.c.updated_at,
    profiles.c.username, profiles.c.tiktok_user_id, profiles.c.nickname, profiles.c.avatar_original_url,
    profiles.c.avatar_key, profiles.c.created_at.label("profile_created_at"),
    profiles.c.updated_at.label("profile_updated_at"),
]
_IMAGE_FIELDS = ("position", "original_url", "image_key", "width", "height")


class AppRepository:
    def __init__(self, engine: AsyncEngine, display_url: str = "the database") -> None:
        self.engine = engine
        self.display_url = display_url

    def _tx(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return transaction(self.engine, self.display_url)

    def _insert(self, table: Any) -> Insert:
        # ON CONFLICT is spelled the same on both, but each dialect has its own Insert construct.
        if self.engine.dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    # ---- TikTok --------------------------------------------------------------------------

    async def tiktok_state(self, tiktok_id: str, username: str) -> tuple[Row | None, Row | None]:
        """The stored post (with its `images`) of `tiktok_id` and the profile of `username`, if any."""
        async with self._tx() as conn:
            found = await self._post_rows(conn, [posts.c.tiktok_id == tiktok_id], 1)
            profile = (await conn.execute(select(profiles).where(profiles.c.username == username))).first()
        return (found[0] if found else None), (dict(profile._mapping) if profile else None)

    async def posts_page(self, *, limit: int, before_id: int | None = None, username: str | None = None,
                         post_id: int | None = None) -> list[Row]:
        """Posts with their profile and images, newest first, in one query."""
        conditions: list[ColumnElement[bool]] = []
        if before_id is not None:
            conditions.append(posts.c.id < before_id)
        if username is not None:
            conditions.append(profiles.c.username == username)
        if post_id is not None:
            conditions.append(posts.c.id == post_id)
        async with self._tx() as conn:
            return await self._post_rows(conn, conditions, limit)

    @staticmethod
    async def _post_rows(conn: AsyncConnection, conditions: Sequence[ColumnElement[bool]], limit: int) -> list[Row]:
        # The page is chosen in a subquery so that LIMIT counts posts, not post-image pairs; the
        # outer join then brings every image of those posts in the same statement.
        page = (select(*_POST_COLUMNS).join(profiles, profiles.c.id == posts.c.profile_id)
                .where(*conditions).order_by(posts.c.id.desc()).limit(limit).subquery("page"))
        images = [post_images.c[name].label(f"image_{name}") for name in _IMAGE_FIELDS]
        stmt = (select(page, *images)
                .select_from(page.outerjoin(post_images, post_images.c.post_id == page.c.id))
                .order_by(page.c.id.desc(), post_images.c.position))
        out: dict[int, Row] = {}
        for row in (await conn.execute(stmt)).all():
            data = dict(row._mapping)
            image = {name: data.pop(f"image_{name}") for name in _IMAGE_FIELDS}
            post = out.setdefault(data["id"], {**data, "images": []})
            if image["position"] is not None:
                post["images"].append(image)
        return list(out.values())

    async def upsert_tiktok_post(self, profile: Row, post: Row, images: Sequence[Row]) -> int:
        """Inserts or updates the profile (by username) and the post (by TikTok id), and replaces the
        post's images, in one transaction; returns the post's id."""
        now = utcnow()
        async with self._tx() as conn:
            ins = self._insert(profiles).values(**profile, created_at=now, updated_at=now)
            ins = ins.on_conflict_do_update(  # type: ignore[attr-defined]
                index_elements=[profiles.c.username],
                set_={**{k: ins.excluded[k] for k in profile}, "updated_at": now})  # type: ignore[attr-defined]
            profile_id = (await conn.execute(ins.returning(profiles.c.id))).scalar_one()
            values = {**post, "profile_id": profile_id}
            ins = self._insert(posts).values(**values, created_at=now, updated_at=now)
            ins = ins.on_conflict_do_update(  # type: ignore[attr-defined]
                index_elements=[posts.c.tiktok_id],
                set_={**{k: ins.excluded[k] for k in values}, "updated_at": now})  # type: ignore[attr-defined]
            post_id = int((await conn.execute(ins.returning(posts.c.id))).scalar_one())
            await conn.execute(delete(post_images).where(post_images.c.post_id == post_id))
            if images:
                await conn.execute(insert(post_images), [{**img, "post_id": post_id} for img in images])
        return post_id

    # ---- carousels -----------------------------------------------------------------------

    async def carousel(self, carousel_id: int) -> Row | None:
        """The carousel with its `images` and `slides` in position order, or None."""
        async with self._tx() as conn:
            row = (await conn.execute(select(carousels).where(carousels.c.id == carousel_id))).first()
            if row is None:
                return None
            images = (await conn.execute(select(carousel_images).where(carousel_images.c.carousel_id == carousel_id)
                                         .order_by(carousel_images.c.position))).all()
            slides = (await conn.execute(select(carousel_slides).where(carousel_slides.c.carousel_id == carousel_id)
                                         .order_by(carousel_slides.c.position))).all()
        return {**row._mapping, "images": [dict(r._mapping) for r in images],
                "slides": [dict(r._mapping) for r in slides]}

    async def save_carousel(self, carousel_id: int | None, values: Row, images: Sequence[Row],
                            slides: Sequence[Row]) -> int:
        """Inserts a carousel (no id) or updates one, replacing its images and slides; returns its id."""
        now = utcnow()
        async with self._tx() as conn:
            if carousel_id is None:
                stmt = insert(carousels).values(**values, created_at=now, updated_at=now).returning(carousels.c.id)
                carousel_id = int((await conn.execute(stmt)).scalar_one())
            else:
                result = await conn.execute(update(carousels).where(carousels.c.id == carousel_id)
                                            .values(**values, updated_at=now))
                if not result.rowcount:
                    raise RecordNotFoundError(
                        f"no carousel with id {carousel_id}: save it without carousel_id to create one")
                await conn.execute(delete(carousel_images).where(carousel_images.c.carousel_id == carousel_id))
                await conn.execute(delete(carousel_slides).where(carousel_slides.c.carousel_id == carousel_id))
            if images:
                await conn.execute(insert(carousel_images), [{**r, "carousel_id": carousel_id} for r in images])
            if slides:
                await conn.execute(insert(carousel_slides), [{**r, "carousel_id": carousel_id} for r in slides])
        return carousel_id
