"""URL resolution: asset rows, legacy keys and original links turned into the URLs to show."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from mediacache.db.media_repository import DerivativeRow, MediaResolvable
from mediacache.domain import CacheStatus
from mediacache.errors import StorageError
from mediacache.records import MediaInfo
from mediacache.storage import ObjectStore


def pick_derivative(derivatives: Sequence[DerivativeRow], kind: str, width: int | None) -> DerivativeRow | None:
    """The narrowest derivative of `kind` at least `width` wide; without a width, the widest."""
    fitting = [d for d in derivatives if d.kind == kind and (width is None or d.width >= width)]
    if not fitting:
        return None
    return min(fitting, key=lambda d: d.width) if width is not None else max(fitting, key=lambda d: d.width)


class UrlResolver:
    """Signs the stored copies of one store, `ttl_s` seconds at a time; reads nothing itself."""

    def __init__(self, store: ObjectStore, ttl_s: int) -> None:
        self._store = store
        self._ttl_s = ttl_s

    def urls(self, values: Sequence[str | uuid.UUID | None], parsed: Sequence[uuid.UUID | None],
             originals: Sequence[str | None], assets: Mapping[uuid.UUID, Any], stored: set[str], *, kind: str,
             width: int | None, sized: bool) -> list[str | None]:
        """One URL per value: a CACHED asset's stored copy (with `sized`, its derivative of `kind` for
        `width`), any other asset's original link, a legacy key in `stored` signed, else the original."""
        store = self._store
        ttl_s = self._ttl_s
        out: list[str | None] = []
        # Our own keys are signed together at the end; the slots they go to wait as None.
        signed_at: list[int] = []
        keys: list[str] = []
        for value, asset_id, original in zip(values, parsed, originals, strict=True):
            if asset_id is not None:
                asset = assets.get(asset_id)
                if asset is not None and asset.status is CacheStatus.CACHED and asset.cache_key:
                    chosen = pick_derivative(asset.derivatives, kind, width) if sized else None
                    signed_at.append(len(out))
                    keys.append(chosen.cache_key if chosen else asset.cache_key)
                    out.append(None)
                else:
                    out.append(original or (asset.original_url if asset else None))
            elif value and str(value) in stored:
                try:
                    out.append(store.url(str(value), ttl_s=ttl_s))
                except StorageError:
                    # A malformed legacy key cannot name an object; fall back as for no value.
                    out.append(original)
            else:
                out.append(original)
        for position, url in zip(signed_at, store.urls(keys, ttl_s=ttl_s), strict=True):
            out[position] = url
        return out

    def media_info(self, asset: MediaResolvable) -> MediaInfo | None:
        """A CACHED asset's metadata and the URLs of its thumbnails and posters; None before derivation."""
        if asset.status is not CacheStatus.CACHED or asset.media_state is None:
            return None
        m = asset.metadata
        links = [{"width": d.width, "height": d.height, "url": self.derivative_url(d)} for d in asset.derivatives]
        kinds = [d.kind for d in asset.derivatives]
        return MediaInfo(width=m.width, height=m.height, placeholder=m.placeholder, duration_s=m.duration_s,
                         thumbnails=[x for x, k in zip(links, kinds, strict=True) if k == "thumb"],
                         posters=[x for x, k in zip(links, kinds, strict=True) if k == "poster"])

    def derivative_url(self, d: DerivativeRow) -> str:
        return self._store.url(d.cache_key, ttl_s=self._ttl_s)
