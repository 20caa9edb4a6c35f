"""The application tables' records over HTTP: TikTok posts and carousels, with every media key resolved."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from mediacache.api.deps import READ, CacheDep
from mediacache.api.errors import ApiError
from mediacache.api.schemas import ErrorResponse
from mediacache.apptables.service import MAX_PAGE
from mediacache.records import CarouselRecord, TikTokPostPage, TikTokPostRecord

router = APIRouter(prefix="/api", tags=["application tables"], dependencies=READ)

# Our ids are 64-bit: a larger number can name no row, and would overflow PostgreSQL's bigint.
RowId = Annotated[int, Path(ge=1, le=2**63 - 1)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (401, 403, 404, 422)}


@router.get("/tiktok/posts", response_model=TikTokPostPage, responses=_NOT_FOUND)
async def list_tiktok_posts(
    cache: CacheDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="posts per page")] = 20,
    cursor: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="`next_cursor` of the last page")] = None,
    username: Annotated[str | None, Query(min_length=1, max_length=100, description="only this author")] = None,
) -> TikTokPostPage:
    """TikTok posts, newest first, with their profile, images and media URLs (stored copy or original)."""
    return await cache.list_tiktok_posts(limit=limit, cursor=cursor, username=username)


@router.get("/tiktok/posts/{post_id}", response_model=TikTokPostRecord, responses=_NOT_FOUND)
async def get_tiktok_post(post_id: RowId, cache: CacheDep) -> TikTokPostRecord:
    """One TikTok post by our id, with its media resolved."""
    post = await cache.get_tiktok_post(post_id)
    if post is None:
        raise ApiError(404, "not_found", f"no TikTok post with id {post_id}")
    return post


@router.get("/carousels/{carousel_id}", response_model=CarouselRecord, responses=_NOT_FOUND)
async def get_carousel(carousel_id: RowId, cache: CacheDep) -> CarouselRecord:
    """One carousel by our id, with its images and slides resolved."""
    carousel = await cache.get_carousel(carousel_id)
    if carousel is None:
        raise ApiError(404, "not_found", f"no carousel with id {carousel_id}")
    return carousel
