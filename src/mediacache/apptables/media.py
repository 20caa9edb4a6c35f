"""Deciding, per media slot of a save, whether to keep the stored key or queue the new URL; no I/O.

Re-saving a row keeps a slot's existing key when the media is the same and its asset is usable
(PENDING, DOWNLOADING or CACHED, or a legacy storage key); otherwise the new URL is queued. "The
same media" is:

- for TikTok, the same URL path: TikTok CDN links are signed again on every scrape (`x-expires`,
  `x-signature`, `expire`, `signature`, ... in the query), so comparing whole URLs would download
  every video again on each save, while the path names the object;
- for carousels, the same URL: a query string there may well pick the image.

When the same media comes back under a new URL (a new signature) and its asset is PENDING, FAILED
or its stored link has expired, the asset keeps its id and gets the new URL (`refresh_source`):
the slot's key stays, and application rows holding the id stay valid.

An asset removed by cleanup, or a slot without a stored URL to compare (legacy rows)
is queued again from the new URL. A kept asset's own `original_url` stays the URL it was first
queued with; the row's `*_original_url` is updated to the newest URL and is what resolution falls
back to while the asset is not cached.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit


def same_media(old_url: str | None, new_url: str | None, *, signed_links: bool) -> bool:
    if not old_url or not new_url:
        return False
    if not signed_links:
        return old_url == new_url
    old_path, new_path = urlsplit(old_url).path, urlsplit(new_url).path
    return old_path == new_path and old_path not in ("", "/")


@dataclass(frozen=True, slots=True)
class _Queued:
    index: int


@dataclass
class MediaPlan:
    """Collects the URLs one save must queue, so they all go out in a single `cache_images` call.

    `slot(...)` returns a placeholder; after queuing, `key(placeholder, ids)` gives the value for
    the `*_key` column: the kept key, the new asset id as text, or None.
    """

    usable_keys: set[str]
    signed_links: bool
    urls: list[str] = field(default_factory=list)
    kept: int = 0
    # Asset ids that may take a new URL for the same media (PENDING, FAILED, or an expired link).
    refreshable_keys: set[str] = field(default_factory=set)
    # (asset id, new URL) for `refresh_source`, in slot order.
    refreshes: list[tuple[str, str]] = field(default_factory=list)

    def slot(self, new_url: str | None, old_url: str | None = None,
             old_key: str | None = None) -> _Queued | str | None:
        if not new_url:
            return None
        if (old_key and old_key in self.refreshable_keys and new_url != old_url
                and same_media(old_url, new_url, signed_links=self.signed_links)):
            self.refreshes.append((old_key, new_url))
            return old_key
        if old_key and old_key in self.usable_keys and same_media(old_url, new_url,
                                                                  signed_links=self.signed_links):
            self.kept += 1
            return old_key
        self.urls.append(new_url)
        return _Queued(len(self.urls) - 1)

    @staticmethod
    def key(planned: _Queued | str | None, ids: list[uuid.UUID]) -> str | None:
        if isinstance(planned, _Queued):
            return str(ids[planned.index])
        return planned


def keys_to_check(values: Iterable[str | None]) -> list[str]:
    """The distinct non-empty keys among `values`."""
    return sorted({v for v in values if v})
