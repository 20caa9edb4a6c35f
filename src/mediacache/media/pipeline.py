"""One file's whole analysis, header to derivatives, as run inside a sandbox process (or in-process)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import av.error
import pyvips

from mediacache.media.derive import DEFAULT_WIDTHS, Rendered, image_thumbnails, video_posters
from mediacache.media.limits import Limits
from mediacache.media.placeholder import thumbhash_of
from mediacache.media.probe import AV_DEMUXERS, Probe, media_type, open_av, probe, read_av, vips_refusal
from mediacache.media.report import MediaRefused, MediaReport, ReportKind


def analyze_file(path: str, content_type: str | None, widths: Sequence[int] = DEFAULT_WIDTHS,
                 limits: Limits | None = None) -> MediaReport:
    """Probe `path`, check the limits, and make its derivatives and placeholder.

    Bad input never raises: it gives a report of kind too_large, corrupt or unsupported. Anything
    else raised is a bug of ours (or the sandbox's time or memory ceiling, which the sandbox reports).
    """
    analysis = _Analysis(path, media_type(content_type), tuple(widths), limits or Limits())
    try:
        return analysis.run()
    except MediaRefused as refused:
        return analysis.report(refused.kind, reason=refused.reason)
    except MemoryError as exc:
        # The sandbox's address-space ceiling: the file needs more memory than we give a decode.
        # av.error.MemoryError (FFmpeg's ENOMEM) is a MemoryError too.
        return analysis.report(ReportKind.TOO_LARGE, reason=f"decoding needs more memory than allowed: {exc}")
    except pyvips.Error as exc:
        failure = vips_refusal(exc, "image undecodable")
        return analysis.report(failure.kind, reason=failure.reason)
    except (av.error.FFmpegError, OSError, ValueError, EOFError) as exc:
        # OSError/ValueError/EOFError: what pillow-heif and NumPy raise on damaged data.
        return analysis.report(ReportKind.CORRUPT, reason=f"undecodable: {type(exc).__name__}: {exc}")


class _Analysis:
    """One file's way through; keeps what the header said, so a later failure still reports it."""

    def __init__(self, path: str, mime: str, widths: tuple[int, ...], limits: Limits) -> None:
        self.path, self.mime, self.widths, self.limits = path, mime, widths, limits
        self.found: Probe | None = None

    def run(self) -> MediaReport:
        demuxer = AV_DEMUXERS.get(self.mime)
        if demuxer is None:
            self.found = probe(self.path, self.mime, self.limits)
            if self.found.refusal is not None:
                return self.report(self.found.refusal.kind, reason=self.found.refusal.reason)
            assert self.found.width and self.found.height  # probe sets the size of every image
            return self.finish(image_thumbnails(self.path, self.widths, source_width=self.found.width,
                                                source_height=self.found.height,
                                                heif_compression=self.found.heif_compression,
                                                has_icc=self.found.has_icc))
        # Audio and video: one open for metadata and poster; opening runs FFmpeg's stream analysis,
        # which for a 1080p H.264 file decodes a frame (~45 ms here).
        with open_av(self.path, demuxer) as container:
            self.found = read_av(container, self.limits)
            if self.found.refusal is not None:
                return self.report(self.found.refusal.kind, reason=self.found.refusal.reason)
            if self.found.family == "audio":
                return self.report(ReportKind.OK)
            rendered = video_posters(container, self.widths)
        if rendered.source_width and rendered.source_height:
            # The header gives the stored size; the decoded frame's display matrix may turn it.
            self.found = replace(self.found, width=rendered.source_width, height=rendered.source_height)
        return self.finish(rendered)

    def finish(self, rendered: Rendered) -> MediaReport:
        return replace(self.report(ReportKind.OK), placeholder=thumbhash_of(rendered.smallest),
                       derivatives=rendered.derivatives)

    def report(self, kind: ReportKind, *, reason: str | None = None) -> MediaReport:
        return _report(self.found, kind, reason=reason)


def _report(found: Probe | None, kind: ReportKind, *, reason: str | None = None) -> MediaReport:
    if found is None:
        return MediaReport(kind=kind, reason=reason)
    return MediaReport(kind=kind, family=found.family, width=found.width, height=found.height, frames=found.frames,
                       duration_s=found.duration_s, video_codec=found.video_codec, audio_codec=found.audio_codec,
                       reason=reason)
