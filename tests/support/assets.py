"""Conditions on assets' states, for `wait_until`."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from mediacache.domain import CacheStatus
from mediacache.service import MediaCache


async def all_in(cache: MediaCache, ids: Iterable[uuid.UUID], *statuses: CacheStatus) -> bool:
    """True once every asset of `ids` exists and is in one of `statuses` (CACHED when none are given)."""
    wanted = statuses or (CacheStatus.CACHED,)
    unique = set(ids)
    records = await cache.get_assets(list(unique))
    return len(records) == len(unique) and all(r.status in wanted for r in records.values())
