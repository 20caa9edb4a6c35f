"""WebP derivatives: image thumbnails and video posters at the configured widths, never upscaled."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import av.container
import av.video.frame
import numpy as np
import pillow_heif
import pyvips

from mediacache.media.probe import video_stream
from mediacache.media.report import Derivative, DerivativeKind, MediaRefused, ReportKind

# Default of MEDIACACHE_THUMB_WIDTHS: a phone column and its 2x-density variant.
DEFAULT_WIDTHS: tuple[int, ...] = (320, 640)
WEBP = "image/webp"
# Measured on a 640 px photo-like thumbnail: effort 2 encodes in half the time of libwebp's default
# effort 4 for 5% more bytes; Q75 (libwebp's default) is 25% smaller than Q80.
WEBP_QUALITY = 75
WEBP_EFFORT = 2
# thumbnail() fits into a width x height box and defaults the height to the width (a square box),
# so it gets WebP's largest side as the height: ordinary pictures are sized by width alone, and a
# very tall strip comes out narrower than asked rather than unencodable (WebP stops at 16383 px).
_UNBOUNDED = 16383
# A video whose first this-many packets give no picture is treated as undecodable.
_MAX_PACKETS_FOR_POSTER = 600


@dataclass
class Rendered:
    """The encoded derivatives and the smallest one as an image (the placeholder is made from it)."""

    derivatives: list[Derivative]
    smallest: pyvips.Image
    # The displayed size of a video, known only once a frame is decoded (rotation is in the frame).
    source_width: int | None = None
    source_height: int | None = None


def plan_widths(widths: Iterable[int], source_width: int) -> list[int]:
    """The widths to make, largest first: every configured width narrower than the source.

    A width at or above the source's is skipped rather than upscaled. When that leaves none (a
    200 px avatar), one derivative is made at the source's own width, so every image and video has
    at least one WebP a browser can show, even when the original is HEIC or TIFF.
    """
    fitting = sorted({w for w in widths if 0 < w < source_width}, reverse=True)
    return fitting or [source_width]


def image_thumbnails(path: str, widths: Sequence[int], *, source_width: int, source_height: int,
                     heif_compression: str | None, has_icc: bool) -> Rendered:
    plan = plan_widths(widths, source_width)
    # Colour-manage only an image that embeds a profile (a Display P3 phone photo must be converted
    # to sRGB, as the profile is stripped from the WebP). Asking for it without one costs ~100 ms on
    # a 1080x1920 JPEG here for no change at all.
    profile = {"export_profile": "srgb"} if has_icc else {}
    if heif_compression == "hevc":
        source = _hevc_image(path)
        profile = {"export_profile": "srgb"} if source.get_typeof("icc-profile-data") else {}
        first = source.thumbnail_image(plan[0], height=_UNBOUNDED, **profile)
    else:
        # thumbnail_source shrinks while decoding where the format allows (JPEG DCT scaling, WebP,
        # HEIF), applies EXIF orientation, and for an animated file decodes the first frame only.
        # fail_on=error turns a truncated or damaged file into an error instead of a picture padded
        # with grey. It must go in the load options: libvips 8.18's thumbnail_source ignores its
        # own fail_on argument (thumbnail from a file name honours it).
        first = pyvips.Image.thumbnail_source(pyvips.Source.new_from_file(path), plan[0], height=_UNBOUNDED,
                                              option_string="fail_on=error", **profile)
    return _render_all(first, plan, "thumb", (source_width, source_height))


def _hevc_image(path: str) -> pyvips.Image:
    """Decode an HEVC-coded HEIC (what iPhones write) with pillow-heif's libheif + libde265.

    pyvips-binary's libheif carries no HEVC decoder (patents), only AV1 for AVIF; libheif applies
    the file's rotation and mirroring while decoding.
    """
    heif = pillow_heif.open_heif(path, convert_hdr_to_8bit=True)
    pixels = np.asarray(heif)
    image = pyvips.Image.new_from_array(pixels, interpretation="srgb")
    icc = heif.info.get("icc_profile")
    if icc:
        # iPhone photos are Display P3: keep the profile so the sRGB export converts the colours.
        image = image.copy()
        image.set_type(pyvips.GValue.blob_type, "icc-profile-data", bytes(icc))
    return image


def video_posters(container: av.container.InputContainer, widths: Sequence[int]) -> Rendered:
    frame, sar = first_frame(container)
    image = pyvips.Image.new_from_array(frame.to_ndarray(format="rgb24"), interpretation="srgb")
    if sar and sar > 0 and sar != 1:
        # Anamorphic video: stretch to square pixels first, as a player shows it.
        image = image.resize(float(Fraction(sar)), vscale=1.0)
    # The display matrix says how a video stored landscape is shown (phones record portrait that
    # way): PyAV gives the angle counter-clockwise, libvips' rot() turns clockwise.
    turn = _CLOCKWISE.get(round(frame.rotation) % 360)
    if turn:
        image = image.rot(turn)
    plan = plan_widths(widths, image.width)
    rendered = _render_all(image.thumbnail_image(plan[0], height=_UNBOUNDED), plan, "poster",
                           (image.width, image.height))
    rendered.source_width, rendered.source_height = image.width, image.height
    return rendered


# Counter-clockwise degrees -> the clockwise turn libvips names.
_CLOCKWISE = {90: "d270", 180: "d180", 270: "d90"}


def first_frame(container: av.container.InputContainer) -> tuple[av.video.frame.VideoFrame, Fraction | None]:
    """The first picture of the first video stream, decoded from its first keyframe, and the
    stream's sample aspect ratio."""
    stream = video_stream(container)
    if stream is None:
        raise MediaRefused(ReportKind.UNSUPPORTED, "the container holds no video stream")
    # One thread: the sandbox runs one decode per process and the pool is the parallelism.
    stream.codec_context.thread_count = 1
    sar = stream.sample_aspect_ratio
    seen_key = False
    for count, packet in enumerate(container.demux(stream)):
        if count >= _MAX_PACKETS_FOR_POSTER:
            break
        seen_key = seen_key or packet.is_keyframe
        if not seen_key:
            continue  # frames before the first keyframe reference pictures we do not have
        for frame in packet.decode():
            if isinstance(frame, av.video.frame.VideoFrame):
                return frame, sar
    for frame in stream.codec_context.decode(None):  # drain the decoder's delay (B-frames)
        if isinstance(frame, av.video.frame.VideoFrame):
            return frame, sar
    raise MediaRefused(ReportKind.CORRUPT, "no video frame could be decoded")


def _render_all(first: pyvips.Image, plan: list[int], kind: DerivativeKind, source: tuple[int, int]) -> Rendered:
    # Decode once into memory; each smaller size is then resized from this copy, not the file.
    largest = _displayable(first).copy_memory()
    derivatives = [_webp(largest, kind)]
    smallest = largest
    source_width, source_height = source
    for width in plan[1:]:
        # The height from the source's aspect, not the copy's: the copy's own rounding (or its
        # narrowing to WebP's 16383 px) would otherwise carry into every smaller size.
        height = max(1, round(width * source_height / source_width))
        if height > _UNBOUNDED or width >= largest.width:
            continue
        smallest = largest.thumbnail_image(width, height=height, size="force").copy_memory()
        derivatives.append(_webp(smallest, kind))
    return Rendered(derivatives, smallest)


def _displayable(image: pyvips.Image) -> pyvips.Image:
    """8-bit sRGB (or grey), which is what WebP holds; 16-bit PNGs and CMYK TIFFs arrive otherwise."""
    if image.format != "uchar" or image.interpretation not in ("srgb", "b-w"):
        image = image.colourspace("srgb")
    return image.cast("uchar") if image.format != "uchar" else image


def _webp(image: pyvips.Image, kind: DerivativeKind) -> Derivative:
    # keep="none" drops EXIF (camera GPS position included) and XMP from the public derivative.
    data = image.webpsave_buffer(Q=WEBP_QUALITY, effort=WEBP_EFFORT, keep="none")
    return Derivative(kind=kind, width=image.width, height=image.height, content_type=WEBP, data=bytes(data))
