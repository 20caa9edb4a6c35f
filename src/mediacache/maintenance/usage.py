"""The usage report: assets and bytes by status, type, host and age, what deduplication saved, the bucket check."""

from __future__ import annotations

import uuid
from typing import Any

from mediacache.db.columns import utcnow
from mediacache.db.repository import AssetRepository
from mediacache.maintenance import orphans
from mediacache.records import BucketCheck, UsageGroup, UsageReport
from mediacache.storage.base import ObjectStore

AGE_BUCKETS = ("0-1d", "1-7d", "7-30d", "older")


def _groups(rows: list[tuple[Any, ...]], *, unknown: str = "unknown") -> dict[str, UsageGroup]:
    out = {}
    for name, n, size, *_ in sorted(rows, key=lambda r: -int(r[1])):
        out[str(name) if name else unknown] = UsageGroup(assets=int(n), bytes=int(size or 0))
    return out


async def usage(assets: AssetRepository, store: ObjectStore, *, check_bucket: bool = False) -> UsageReport:
    """The report; with `check_bucket`, the store is also listed (see `orphans.collect`, dry run)
    for objects that no asset holds and assets whose object is missing."""
    rows = await assets.reports.usage_rows(utcnow())
    by_status = _groups(rows["status"])
    by_age = _groups(rows["age"])
    stored_objects, stored_bytes = (int(v or 0) for v in rows["objects"][0])
    logical = by_status.get("CACHED", UsageGroup()).bytes
    bucket = None
    if check_bucket:
        report = await orphans.collect(assets, store, dry_run=True)
        missing_ids = [asset_id for asset_id, _key in report.dangling_rows]
        records = await assets.get_many(sorted({uuid.UUID(i) for i in missing_ids}))
        bucket = BucketCheck(orphan_objects=len(report.orphan_objects), orphan_bytes=report.orphan_bytes,
                             missing_objects=len(missing_ids),
                             missing_bytes=sum(r.size_bytes or 0 for r in records.values()))
    return UsageReport(
        assets=sum(g.assets for g in by_status.values()), stored_objects=stored_objects, stored_bytes=stored_bytes,
        logical_bytes=logical, downloads_avoided=sum(int(r[3] or 0) for r in rows["status"]),
        bytes_not_stored=max(logical - stored_bytes, 0), by_status=by_status,
        by_content_type=_groups(rows["content_type"]), by_host=_groups(rows["host"]),
        by_age={name: by_age.get(name, UsageGroup()) for name in AGE_BUCKETS}, bucket=bucket)
