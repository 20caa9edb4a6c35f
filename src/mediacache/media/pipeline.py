"""One file's whole analysis, header to derivatives, as run inside a sandbox process (or in-process)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import av.error
import pyvips

from mediacache.media.derive import DEFAULT_WIDTHS, image_thumbnails, video_posters
from mediacache.media.limits import Limits
from mediacache.media.placeholder import thumbhash_of
from mediacache.media.probe import AV_DEMUXERS, Probe, probe, vips_message
from mediacache.media.report import MediaRefused, MediaReport, ReportKind


def analyze_file(path: str, content_type: str | None, widths: Sequence[int] = DEFAULT_WIDTHS,
                 limits: Limits | None = None) -> MediaReport:
    """Probe `path`, check the limits, and make its derivatives and placeholder.

    Bad input never raises: it gives a report of kind too_large, corrupt or unsupported. Anything
    else raised is a bug of ours (or the sandbox's time or memory ceiling, which the sandbox reports).
    """
    limits = limits or Limits()
    found: Probe | None = None
    try:
        found = probe(path, content_type, limits)
        if found.refusal is not None:
            return _report(found, found.refusal.kind, reason=found.refusal.reason)
        return _derive(path, content_type, widths, found)
    except MediaRefused as refused:
        return _report(found, refused.kind, reason=refused.reason)
    except MemoryError as exc:
        # The sandbox's address-space ceiling: the file needs more memory than we give a decode.
        # av.error.MemoryError (FFmpeg's ENOMEM) is a MemoryError too.
        return _report(found, ReportKind.TOO_LARGE, reason=f"decoding needs more memory than allowed: {exc}")
    except pyvips.Error as exc:
        message = vips_message(exc)
        kind = ReportKind.TOO_LARGE if "out of memory" in message else ReportKind.CORRUPT
        return _report(found, kind, reason=f"image undecodable: {message}")
    except (av.error.FFmpegError, OSError, ValueError, EOFError) as exc:
        # OSError/ValueError/EOFError: what pillow-heif and NumPy raise on damaged data.
        return _report(found, ReportKind.CORRUPT, reason=f"undecodable: {type(exc).__name__}: {exc}")


def _derive(path: str, content_type: str | None, widths: Sequence[int], found: Probe) -> MediaReport:
    if found.family == "audio":
        return _report(found, ReportKind.OK)
    assert found.width is not None and found.height is not None  # probe sets both for image and video
    if found.family == "image":
        rendered = image_thumbnails(path, widths, source_width=found.width, heif_compression=found.heif_compression,
                                    has_icc=found.has_icc)
    else:
        mime = (content_type or "").split(";", 1)[0].strip().lower()
        rendered = video_posters(path, AV_DEMUXERS[mime], widths)
        if rendered.source_width and rendered.source_height:
            # The header gives the stored size; the decoded frame's display matrix may turn it.
            found = replace(found, width=rendered.source_width, height=rendered.source_height)
    return replace(_report(found, ReportKind.OK), placeholder=thumbhash_of(rendered.smallest),
                   derivatives=rendered.derivatives)


def _report(found: Probe | None, kind: ReportKind, *, reason: str | None = None) -> MediaReport:
    if found is None:
        return MediaReport(kind=kind, reason=reason)
    return MediaReport(kind=kind, family=found.family, width=found.width, height=found.height, frames=found.frames,
                       duration_s=found.duration_s, video_codec=found.video_codec, audio_codec=found.audio_codec,
                       reason=reason)
