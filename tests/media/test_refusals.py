"""Bombs and broken files are refused with the right kind, from the header, before any decoding."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import pyvips

from mediacache.media import Limits, MediaRefused, MediaReport, ReportKind, analyze_file
from mediacache.media import pipeline as pipeline_module
from tests.media import makers
from tests.media.makers import Sample

# Loose on purpose: the machine is shared. The real figure is printed (pytest -s shows it); on an
# idle core each of these takes well under 50 ms.
LOOSE_S = 2.0


def _timed(sample: Sample) -> tuple[MediaReport, float]:
    start = time.perf_counter()
    report = analyze_file(str(sample.path), sample.content_type)
    return report, time.perf_counter() - start


def test_png_declaring_50000_by_50000_is_too_large(bombs: dict[str, Sample]) -> None:
    sample = bombs["png_50k"]
    assert sample.path.stat().st_size < 200
    report, took_s = _timed(sample)
    print(f"\n50,000 x 50,000 PNG refused in {took_s * 1000:.2f} ms")
    assert report.kind is ReportKind.TOO_LARGE
    assert (report.width, report.height) == (50_000, 50_000)
    assert "MEDIACACHE_MAX_PIXELS" in (report.reason or "")
    assert report.derivatives == []
    assert took_s < LOOSE_S


def test_gif_of_10000_frames_is_too_large(bombs: dict[str, Sample]) -> None:
    report, took_s = _timed(bombs["gif_10k_frames"])
    print(f"\n10,000-frame GIF refused in {took_s * 1000:.2f} ms")
    assert report.kind is ReportKind.TOO_LARGE
    assert report.frames == 10_000
    assert "MEDIACACHE_MAX_FRAMES" in (report.reason or "")
    assert took_s < LOOSE_S


def test_truncated_jpeg_is_corrupt(bombs: dict[str, Sample]) -> None:
    report, took_s = _timed(bombs["jpeg_truncated"])
    print(f"\ntruncated JPEG refused in {took_s * 1000:.2f} ms")
    assert report.kind is ReportKind.CORRUPT
    assert "premature end" in (report.reason or "")
    assert took_s < LOOSE_S


def test_limits_are_the_callers(samples: dict[str, Sample]) -> None:
    jpeg, gif = samples["jpeg"], samples["gif"]
    assert analyze_file(str(jpeg.path), jpeg.content_type, limits=Limits(max_pixels=1200 * 800)).kind is ReportKind.OK
    small = analyze_file(str(jpeg.path), jpeg.content_type, limits=Limits(max_pixels=1200 * 800 - 1))
    assert small.kind is ReportKind.TOO_LARGE
    assert analyze_file(str(gif.path), gif.content_type, limits=Limits(max_frames=5)).kind is ReportKind.OK
    assert analyze_file(str(gif.path), gif.content_type, limits=Limits(max_frames=4)).kind is ReportKind.TOO_LARGE


def test_video_frame_size_is_limited(samples: dict[str, Sample]) -> None:
    mp4 = samples["mp4"]
    report = analyze_file(str(mp4.path), mp4.content_type, limits=Limits(max_pixels=640 * 360 - 1))
    assert report.kind is ReportKind.TOO_LARGE
    assert (report.width, report.height, report.video_codec) == (640, 360, "h264")


def test_limits_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="MEDIACACHE_MAX_PIXELS"):
        Limits(max_pixels=0)


@pytest.mark.parametrize("content_type", ["image/jpeg", "image/png", "image/gif", "image/heic", "video/mp4",
                                          "audio/mpeg", "video/webm"])
def test_garbage_declared_as_media_is_corrupt(tmp_path: Path, content_type: str) -> None:
    path = tmp_path / "garbage"
    path.write_bytes(bytes(range(256)) * 64)
    report = analyze_file(str(path), content_type)
    assert report.kind is ReportKind.CORRUPT, report


@pytest.mark.parametrize("content_type", ["image/jpeg", "video/mp4", "audio/mpeg"])
def test_empty_file_is_corrupt(tmp_path: Path, content_type: str) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert analyze_file(str(path), content_type).kind is ReportKind.CORRUPT


def test_truncated_video_is_corrupt(samples: dict[str, Sample], tmp_path: Path) -> None:
    # The moov box of this file follows its media data, so the first half holds no index at all.
    path = makers.truncated(samples["mp4"].path, tmp_path / "half.mp4")
    assert analyze_file(str(path), "video/mp4").kind is ReportKind.CORRUPT


@pytest.mark.parametrize("content_type", ["image/svg+xml", "image/bmp", "application/pdf", "text/html"])
def test_types_without_derivatives_are_unsupported(samples: dict[str, Sample], content_type: str) -> None:
    report = analyze_file(str(samples["jpeg"].path), content_type)
    assert report.kind is ReportKind.UNSUPPORTED


def test_without_a_content_type_only_images_are_tried(samples: dict[str, Sample]) -> None:
    assert analyze_file(str(samples["jpeg"].path), None).kind is ReportKind.OK
    # No demuxer is guessed for an undeclared file: FFmpeg's probing could pick a playlist format.
    assert analyze_file(str(samples["mp3"].path), None).kind is ReportKind.UNSUPPORTED


def test_out_of_memory_while_decoding_is_too_large(samples: dict[str, Sample], monkeypatch: pytest.MonkeyPatch) -> None:
    def exhausted(*args: object, **kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr(pipeline_module, "image_thumbnails", exhausted)
    report = analyze_file(str(samples["jpeg"].path), "image/jpeg")
    assert report.kind is ReportKind.TOO_LARGE
    assert (report.width, report.height) == (1200, 800)


def test_refusal_is_a_mediacache_error() -> None:
    from mediacache.errors import MediaCacheError

    assert issubclass(MediaRefused, MediaCacheError)


def test_libvips_out_of_memory_is_too_large(samples: dict[str, Sample], monkeypatch: pytest.MonkeyPatch) -> None:
    # What libvips says when the sandbox's address-space ceiling stops an allocation (seen here
    # from webpload reading the header of a 7000x7000 WebP under a 700 MiB ceiling).
    def exhausted(*args: object, **kwargs: object) -> None:
        raise pyvips.Error("unable to call VipsForeignLoadWebpSource", "vips_tracked: out of memory -- size == 186MB")

    monkeypatch.setattr(pyvips.Image, "new_from_source", exhausted)
    report = analyze_file(str(samples["jpeg"].path), "image/jpeg")
    assert report.kind is ReportKind.TOO_LARGE
    assert "out of memory" in (report.reason or "")
