"""Which of some storage keys name a stored object: HEADs in parallel, a few at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from mediacache.errors import UnsafeKeyError
from mediacache.storage.base import ObjectStore

# Enough to hide S3's latency for a page of legacy keys, few enough not to flood the store when a
# caller sends a thousand.
LEGACY_HEAD_CONCURRENCY = 16


async def stored_keys(store: ObjectStore, keys: Collection[str], *,
                      concurrency: int = LEGACY_HEAD_CONCURRENCY) -> set[str]:
    """The keys among `keys` under which `store` holds an object; a key the store refuses holds none.

    A store that cannot be reached raises its StorageError: "unknown" must not read as "absent".
    """
    gate = asyncio.Semaphore(concurrency)

    async def exists(key: str) -> bool:
        async with gate:
            try:
                return await store.head(key) is not None
            except UnsafeKeyError:
                return False

    distinct = list(dict.fromkeys(keys))
    found = await asyncio.gather(*(exists(k) for k in distinct))
    return {k for k, ok in zip(distinct, found, strict=True) if ok}
