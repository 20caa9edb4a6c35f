"""The legacy-key backfill: each plain storage key in a `*_key` column becomes a CACHED asset's id.

Rows written before mediacache hold storage keys. For each such key the backfill HEADs the object
(size, and content type where the store keeps one, else a guess from the extension), creates a
CACHED asset pointing at that object, and rewrites the column to the asset's id. The sha256 stays
NULL: computing it would download every legacy object once, a cost the backfill should not impose
(the worker records it for everything it downloads).

Safe to interrupt and to run again:
- rows are read in small keyset-paged batches, and each batch is one transaction (assets created
  and rows rewritten together, or neither);
- a converted column holds an asset id, so the next run does not select it again;
- the asset id is derived from the key (UUID v5), so every row holding one key (in any table, in
  any run) shares one asset, and two assets never own (and later delete) one object;
- a key whose object is missing, or that is not a safe key, is reported and its row left alone.
"""

from __future__ import annotations

import asyncio
import mimetypes
import uuid
from collections.abc import Callable, Iterable

from mediacache.apptables.models import KEY_COLUMNS
from mediacache.apptables.refs_repository import LegacyAsset, RefsRepository
from mediacache.domain import parse_asset_id
from mediacache.errors import UnsafeKeyError
from mediacache.records import BackfillReport, LegacyKeyProblem
from mediacache.storage.base import ObjectInfo, ObjectStore

# Fixed for good: changing it would give already-converted keys a second asset.
LEGACY_NAMESPACE = uuid.UUID("5d0c7f0e-8a51-4e8e-9a51-2b1f0c3e6d42")
DEFAULT_BATCH_ROWS = 200
_HEAD_CONCURRENCY = 16


def legacy_asset_id(key: str) -> uuid.UUID:
    return uuid.uuid5(LEGACY_NAMESPACE, key)


def legacy_original_url(key: str) -> str:
    """What a backfilled asset records as its original URL when its row knows none.

    The URL the object was once downloaded from is lost; this marker says where the asset came
    from, and the worker refuses it (not a http(s) URL) should the asset ever be queued again.
    """
    return f"legacy-key:{key}"


async def _head_all(store: ObjectStore, keys: Iterable[str]) -> dict[str, ObjectInfo | str]:
    """The object of each key, or the reason there is none to convert."""
    gate = asyncio.Semaphore(_HEAD_CONCURRENCY)
    found: dict[str, ObjectInfo | str] = {}

    async def one(key: str) -> None:
        async with gate:
            try:
                info = await store.head(key)
            except UnsafeKeyError as exc:
                found[key] = f"not a usable storage key: {exc}"
                return
        found[key] = info if info is not None else f"no object at {key!r} in {store.name} storage"

    await asyncio.gather(*(one(k) for k in set(keys)))
    return found


async def backfill_legacy_keys(store: ObjectStore, refs: RefsRepository, *, dry_run: bool = False,
                               batch_rows: int = DEFAULT_BATCH_ROWS,
                               on_total: Callable[[int], None] | None = None,
                               on_advance: Callable[[int], None] | None = None) -> BackfillReport:
    """Converts every legacy key (or with `dry_run`, only reports what it would convert)."""
    if batch_rows < 1:
        raise ValueError(f"batch_rows={batch_rows}: must be 1 or more")
    if on_total is not None:
        on_total(await refs.count_legacy_candidates())
    rows_seen = rows_converted = 0
    keys: set[str] = set()
    problems: list[LegacyKeyProblem] = []
    for table, col, url_col in KEY_COLUMNS:
        after_id = 0
        while rows := await refs.legacy_candidates(table, col, url_col, after_id, batch_rows):
            after_id = rows[-1].row_id
            # 32-hex-digit values pass the SQL filter but name asset ids to get_urls: not legacy.
            legacy = [r for r in rows if parse_asset_id(r.key) is None]
            objects = await _head_all(store, (r.key for r in legacy))
            assets: dict[str, LegacyAsset] = {}
            convertible = 0
            for r in legacy:
                info = objects[r.key]
                if isinstance(info, str):
                    problems.append(LegacyKeyProblem(table.name, col.name, r.row_id, r.key, info))
                    continue
                convertible += 1
                if r.key not in assets:
                    content_type = info.content_type or mimetypes.guess_type(r.key)[0]
                    assets[r.key] = LegacyAsset(legacy_asset_id(r.key), r.key,
                                                r.original_url or legacy_original_url(r.key),
                                                content_type, info.size_bytes)
            if dry_run:
                converted = convertible
            else:
                # Also rewrites later rows of this table that hold the same keys; they will not be
                # selected again, so they count towards progress here.
                converted = await refs.convert_legacy(table, col, list(assets.values()))
            rows_converted += converted
            rows_seen += len(rows) - convertible + converted
            keys.update(assets)
            if on_advance is not None:
                on_advance(len(rows) - convertible + converted)
    return BackfillReport(dry_run=dry_run, rows_seen=rows_seen, rows_converted=rows_converted,
                          keys_converted=len(keys), problems=problems)
