"""The events mediacache announces, and the JSON body a webhook receiver gets for each."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mediacache.domain import CacheStatus
from mediacache.records import AssetRecord

ASSET_CACHED = "asset.cached"
ASSET_FAILED = "asset.failed"

# The asset fields a webhook carries (attempts stays out: it changes with retries, not outcomes).
DATA_FIELDS = ("id", "status", "cache_key", "content_type", "size_bytes", "sha256", "error_kind", "error",
               "created_at", "updated_at", "cached_at", "original_url")


@dataclass(frozen=True, slots=True)
class Event:
    id: uuid.UUID
    type: str
    asset_id: uuid.UUID
    timestamp: datetime
    body: str  # the JSON text, built once: the outbox stores, and the signature covers, these bytes


def event_type_for(status: CacheStatus) -> str:
    return ASSET_CACHED if status is CacheStatus.CACHED else ASSET_FAILED


def asset_event(record: AssetRecord, *, now: datetime, event_id: uuid.UUID | None = None) -> Event:
    """The event announcing `record`'s final status."""
    event_id = event_id or uuid.uuid4()
    kind = event_type_for(record.status)
    data = {name: _json_value(getattr(record, name)) for name in DATA_FIELDS}
    body = json.dumps({"type": kind, "id": str(event_id), "timestamp": now.isoformat(), "data": data},
                      separators=(",", ":"))
    return Event(event_id, kind, record.id, now, body)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, CacheStatus):
        return value.value
    return value
