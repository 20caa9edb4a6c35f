"""Metadata from a media file's header: size, frames, duration and codecs, read before any decoding."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import av.error
import av.video.stream
import pyvips
from av.stream import Disposition
from PIL import Image as PILImage

from mediacache.media.limits import Limits
from mediacache.media.report import MediaFamily, MediaRefused, ReportKind

# The libvips loaders we let decode. Opening through a Source means libvips picks the loader by
# the file's first bytes only (never by a file name suffix), and this set keeps out the loaders
# that are no photo or frame format (vips, matrix, csv, raw) and SVG, which has no pixel size to
# limit and which libvips would render with librsvg.
IMAGE_LOADERS = frozenset({"jpegload_source", "pngload_source", "gifload_source", "webpload_source",
                           "heifload_source", "tiffload_source"})
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp", "image/avif", "image/heic",
                         "image/heif", "image/tiff"})

# Content type (as mediacache's sniffer names it) -> the FFmpeg demuxer that reads it. Naming the
# demuxer instead of letting FFmpeg probe matters: a probed file could be read as an HLS or concat
# playlist, whose entries make FFmpeg open other files and URLs.
AV_DEMUXERS: dict[str, str] = {
    "video/mp4": "mov", "video/quicktime": "mov", "video/3gpp": "mov", "video/3gpp2": "mov", "audio/mp4": "mov",
    "video/webm": "matroska", "video/x-matroska": "matroska", "video/x-msvideo": "avi", "video/x-flv": "flv",
    "video/mpeg": "mpeg", "video/ogg": "ogg", "audio/ogg": "ogg", "audio/mpeg": "mp3", "audio/aac": "aac",
    "audio/flac": "flac", "audio/wav": "wav", "audio/aiff": "aiff",
}

# EXIF orientations 5-8 turn the picture by 90 degrees, so its displayed width is the stored height.
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})


@dataclass
class Probe:
    """What the header said. Width and height are as displayed (orientation applied)."""

    family: MediaFamily
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    duration_s: float | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    # Set when a limit refused the file: the fields above are what the header declared.
    refusal: MediaRefused | None = field(default=None, repr=False)
    # For derive.py: the libvips loader, and HEIF's codec (libvips-binary decodes AV1 but not HEVC).
    loader: str | None = None
    heif_compression: str | None = None
    has_icc: bool = False


def probe(path: str, content_type: str | None, limits: Limits) -> Probe:
    """Read `path`'s header. Raises MediaRefused (corrupt or unsupported); records a limit refusal.

    `content_type` is the sniffed type stored with the asset. None tries the image decoders only.
    """
    mime = media_type(content_type)
    if not mime or mime in IMAGE_TYPES:
        return probe_image(path, limits, declared=bool(mime))
    if mime in AV_DEMUXERS:
        with open_av(path, AV_DEMUXERS[mime]) as container:
            return read_av(container, limits)
    raise MediaRefused(ReportKind.UNSUPPORTED, f"no derivatives are made from {mime!r}")


def media_type(content_type: str | None) -> str:
    """`Video/MP4; codecs=avc1` -> `video/mp4`; None -> ``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def probe_image(path: str, limits: Limits, *, declared: bool = True) -> Probe:
    try:
        # access="sequential" makes libvips read the header only; pixels are decoded on demand.
        image = pyvips.Image.new_from_source(pyvips.Source.new_from_file(path), "", access="sequential")
    except pyvips.Error as exc:
        refused = vips_refusal(exc, "image header unreadable")
        if refused.kind is ReportKind.CORRUPT and not declared:
            refused = MediaRefused(ReportKind.UNSUPPORTED, refused.reason)
        raise refused from exc
    loader = str(image.get("vips-loader"))
    if loader not in IMAGE_LOADERS:
        raise MediaRefused(ReportKind.UNSUPPORTED, f"no derivatives are made by the {loader} decoder")
    width, height = image.width, image.height
    if _field(image, "orientation") in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    heif_compression = _field(image, "heif-compression")
    found = Probe(family="image", width=width, height=height, loader=loader,
                  heif_compression=str(heif_compression) if heif_compression else None,
                  has_icc=bool(image.get_typeof("icc-profile-data")))
    try:
        limits.check_pixels(width, height)
        found.frames = _image_frames(path, image, loader)
        limits.check_frames(found.frames)
    except MediaRefused as refused:
        if refused.kind is not ReportKind.TOO_LARGE:
            raise
        found.refusal = refused
    return found


def _image_frames(path: str, image: pyvips.Image, loader: str) -> int:
    if loader == "pngload_source":
        # libvips reads an APNG's default image only; Pillow reads the frame count from the acTL
        # chunk without decoding. Our own pixel check has run, so Pillow's bomb check is redundant.
        try:
            with PILImage.open(path, formats=["PNG"]) as png:
                return int(getattr(png, "n_frames", 1))
        except (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError) as exc:
            raise MediaRefused(ReportKind.CORRUPT, f"PNG chunks unreadable: {exc}") from exc
    # GIF, WebP, TIFF and HEIF give their page count from the header scan.
    return int(_field(image, "n-pages") or 1)


@contextmanager
def open_av(path: str, demuxer: str) -> Iterator[av.container.InputContainer]:
    """The file opened by FFmpeg's `demuxer`; FFmpeg's errors inside the block become corrupt."""
    try:
        # A Python file object, not a path: FFmpeg then gets no URL to resolve, only these bytes.
        with open(path, "rb") as file, av.open(file, "r", format=demuxer) as container:
            yield container
    except MemoryError:
        raise  # av.error.MemoryError is an FFmpegError too, but it means too large, not corrupt
    except av.error.FFmpegError as exc:
        raise MediaRefused(ReportKind.CORRUPT, f"{demuxer} data unreadable: {exc}") from exc


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The first real video stream; one flagged attached_pic is an MP3's or M4A's cover art."""
    for stream in container.streams.video:
        if not stream.disposition & Disposition.attached_pic:
            return stream
    return None


def read_av(container: av.container.InputContainer, limits: Limits) -> Probe:
    """Size, duration and codecs of an opened audio or video file; a limit refusal is recorded."""
    video = video_stream(container)
    audios = list(container.streams.audio)
    if video is None and not audios:
        raise MediaRefused(ReportKind.UNSUPPORTED, "the container holds no audio or video stream")
    found = Probe(family="video" if video else "audio")
    if audios:
        found.audio_codec = audios[0].codec_context.codec.canonical_name
    found.duration_s = _duration_s(container, video or audios[0])
    if video is None:
        return found
    found.video_codec = video.codec_context.codec.canonical_name
    width, height = video.codec_context.width, video.codec_context.height
    if not width or not height:
        raise MediaRefused(ReportKind.CORRUPT, f"video stream declares no frame size ({width}x{height})")
    sar = video.sample_aspect_ratio
    if sar and sar > 0 and sar != 1:
        # Anamorphic video: pixels are not square, the displayed width is the stored width times SAR.
        width = max(1, round(width * Fraction(sar)))
    found.width, found.height = width, height
    try:
        limits.check_pixels(video.codec_context.width, video.codec_context.height)
    except MediaRefused as refused:
        found.refusal = refused
    return found


def _duration_s(container: av.container.InputContainer, stream: av.stream.Stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _field(image: pyvips.Image, name: str) -> Any:
    return image.get(name) if image.get_typeof(name) else None


def vips_refusal(exc: pyvips.Error, what: str) -> MediaRefused:
    """A libvips error as a refusal: an allocation over the sandbox's memory ceiling is too_large
    (some loaders allocate while reading the header), anything else corrupt."""
    # pyvips puts "unable to call ..." first and the loader's own words after it.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    message = "; ".join(lines[1:] or lines) or type(exc).__name__
    kind = ReportKind.TOO_LARGE if "out of memory" in message else ReportKind.CORRUPT
    return MediaRefused(kind, f"{what}: {message}")
