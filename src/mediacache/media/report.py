"""What analysing one media file gives: the report, its derivatives, and the refusal raised on the way."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from mediacache.errors import MediaCacheError


class ReportKind(StrEnum):
    OK = "ok"
    # The header declares more pixels or frames than allowed: refused before any decoding.
    TOO_LARGE = "too_large"
    # Unreadable, truncated, or the decoder crashed or ran out of time on it.
    CORRUPT = "corrupt"
    # A type we do not derive from (SVG, BMP, an unknown container): the original is still served.
    UNSUPPORTED = "unsupported"


MediaFamily = Literal["image", "video", "audio"]
DerivativeKind = Literal["thumb", "poster"]


@dataclass(frozen=True)
class Derivative:
    """One encoded derivative; `data` is the whole file (a few KB to a few tens of KB of WebP)."""

    kind: DerivativeKind
    width: int
    height: int
    content_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class MediaReport:
    """Metadata, placeholder and derivatives of one file, or why there are none.

    Width and height are as displayed: EXIF orientation and a video's rotation are applied, so a
    portrait phone photo stored 4032x3024 with orientation 6 reports 3024x4032. The metadata fields
    are filled as far as the header was read, so a `too_large` report still carries the declared size.
    """

    kind: ReportKind
    family: MediaFamily | None = None
    width: int | None = None
    height: int | None = None
    # Images only: the number of frames (pages) of an animated GIF, WebP or APNG, 1 for a still.
    frames: int | None = None
    duration_s: float | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    # A ThumbHash, base64-encoded (see placeholder.py); None for audio and refused files.
    placeholder: str | None = None
    derivatives: list[Derivative] = field(default_factory=list)
    # For people and logs: what was refused, or what failed.
    reason: str | None = None
    # A corrupt report caused by the per-file time limit rather than by the data itself: on a
    # loaded machine a good file can hit it, so a caller may try such a file once more.
    timed_out: bool = False


class MediaRefused(MediaCacheError):
    """Raised inside the analysis when a file is refused; the sandbox turns it into a report."""

    def __init__(self, kind: ReportKind, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
