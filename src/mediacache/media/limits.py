"""The size limits a file must pass, judged from its header before any pixel is decoded."""

from __future__ import annotations

from dataclasses import dataclass

from mediacache.media.report import MediaRefused, ReportKind

# Defaults of MEDIACACHE_MAX_PIXELS and MEDIACACHE_MAX_FRAMES. 50 MP covers every phone camera
# (a 48 MP sensor gives 8064x6048 = 48.8 MP); a decoded RGBA frame of that size is 200 MB.
DEFAULT_MAX_PIXELS = 50_000_000
# An animated GIF or WebP of 1,000 frames is a 30-second loop; counting frames walks the file's
# block structure only, so this bounds the header scan, not a decode.
DEFAULT_MAX_FRAMES = 1000


@dataclass(frozen=True)
class Limits:
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_frames: int = DEFAULT_MAX_FRAMES

    def __post_init__(self) -> None:
        if self.max_pixels < 1 or self.max_frames < 1:
            raise ValueError(f"media limits must be positive, got max_pixels={self.max_pixels} "
                             f"max_frames={self.max_frames}: set MEDIACACHE_MAX_PIXELS/MEDIACACHE_MAX_FRAMES >= 1")

    def check_pixels(self, width: int, height: int) -> None:
        """Refuse a frame whose declared area is over the limit (one frame: only one is ever decoded)."""
        if width < 1 or height < 1:
            raise MediaRefused(ReportKind.CORRUPT, f"header declares an empty frame of {width}x{height} px")
        if width * height > self.max_pixels:
            raise MediaRefused(ReportKind.TOO_LARGE, f"{width}x{height} px = {width * height:,} px is over "
                                                     f"the limit of {self.max_pixels:,} (MEDIACACHE_MAX_PIXELS)")

    def check_frames(self, frames: int) -> None:
        if frames > self.max_frames:
            raise MediaRefused(ReportKind.TOO_LARGE, f"{frames:,} frames is over the limit of {self.max_frames:,} "
                                                     "(MEDIACACHE_MAX_FRAMES)")
