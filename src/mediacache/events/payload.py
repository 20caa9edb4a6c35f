"""The events mediacache announces, and the JSON body a webhook receiver gets for each."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mediacache.domain import CacheStatus
from mediacache.records import AssetRecord

ASSET_CACHED = "asset.cached"
ASSET_FAILED = "asset.failed"
# The derive step is over for a CACHED asset: its metadata, placeholder and derivatives are
# recorded, or `media_state` says why there are none. It never changes the asset's status.
ASSET_DERIVED = "asset.derived"

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


def split_at(event: Event, value: str) -> tuple[str, str]:
    """The body before and after the JSON string `value`, which it holds once (to put another value there)."""
    marker = json.dumps(value)
    head, found, tail = event.body.partition(marker)
    if not found or marker in tail:
        raise ValueError(f"the body of event {event.id} does not hold {marker} exactly once")
    return head, tail


def with_body(event: Event, body: str) -> Event:
    return Event(event.id, event.type, event.asset_id, event.timestamp, body)


# What asset.derived carries besides the asset's identity: the columns the derive worker writes.
MEDIA_FIELDS = ("media_state", "media_error", "width", "height", "frames", "duration_s", "video_codec",
                "audio_codec", "placeholder")
# Per derivative: what a frontend needs to pick one (kind, size) and where it is stored.
DERIVATIVE_FIELDS = ("kind", "width", "height", "content_type", "cache_key", "size_bytes")


def derived_event(asset: Mapping[str, Any], media: Mapping[str, Any], derivatives: Sequence[Mapping[str, Any]], *,
                  now: datetime, event_id: uuid.UUID | None = None) -> Event:
    """The event announcing that `asset` (its id, status, cache_key, content_type and original_url)
    was derived: `media` holds MEDIA_FIELDS, `derivatives` one mapping with DERIVATIVE_FIELDS each."""
    event_id = event_id or uuid.uuid4()
    data = {name: _json_value(value) for name, value in asset.items()}
    data.update({name: _json_value(media.get(name)) for name in MEDIA_FIELDS})
    data["derivatives"] = [{name: _json_value(d[name]) for name in DERIVATIVE_FIELDS} for d in derivatives]
    body = json.dumps({"type": ASSET_DERIVED, "id": str(event_id), "timestamp": now.isoformat(), "data": data},
                      separators=(",", ":"))
    asset_id = asset["id"]
    return Event(event_id, ASSET_DERIVED, asset_id if isinstance(asset_id, uuid.UUID) else uuid.UUID(str(asset_id)),
                 now, body)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, CacheStatus):
        return value.value
    return value
