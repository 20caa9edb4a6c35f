"""Metadata equals what the generator was told: sizes exactly (as displayed), durations within 50 ms."""

from __future__ import annotations

import pytest

from mediacache.media import ReportKind, analyze_file
from tests.media.makers import Sample

IMAGES = ["jpeg", "jpeg_rotated", "png_alpha", "png_small", "webp", "avif", "heic", "gif", "webp_animated", "apng"]


@pytest.mark.parametrize("name", IMAGES)
def test_image_size_and_frames_are_read(samples: dict[str, Sample], name: str) -> None:
    sample = samples[name]
    report = analyze_file(str(sample.path), sample.content_type)
    assert report.kind is ReportKind.OK, report.reason
    assert report.family == "image"
    assert (report.width, report.height) == (sample.width, sample.height)
    assert report.frames == sample.frames
    assert report.duration_s is None and report.video_codec is None and report.audio_codec is None


@pytest.mark.parametrize(("name", "video_codec", "audio_codec"), [
    ("mp4", "h264", "aac"), ("mp4_rotated", "h264", None), ("mp4_hevc", "hevc", "aac"), ("webm_vp9", "vp9", "opus")])
def test_video_size_duration_and_codecs_are_read(samples: dict[str, Sample], name: str, video_codec: str,
                                                 audio_codec: str | None) -> None:
    sample = samples[name]
    report = analyze_file(str(sample.path), sample.content_type)
    assert report.kind is ReportKind.OK, report.reason
    assert report.family == "video"
    assert (report.width, report.height) == (sample.width, sample.height)
    assert report.duration_s == pytest.approx(sample.duration_s, abs=0.05)
    assert (report.video_codec, report.audio_codec) == (video_codec, audio_codec)
    assert report.frames is None


def test_audio_duration_and_codec_are_read(samples: dict[str, Sample]) -> None:
    sample = samples["mp3"]
    report = analyze_file(str(sample.path), sample.content_type)
    assert report.kind is ReportKind.OK, report.reason
    assert report.family == "audio"
    assert report.duration_s == pytest.approx(sample.duration_s, abs=0.05)
    assert report.audio_codec == "mp3"
    assert report.width is None and report.height is None and report.video_codec is None
    assert report.derivatives == [] and report.placeholder is None


def test_content_type_parameters_are_ignored(samples: dict[str, Sample]) -> None:
    report = analyze_file(str(samples["mp3"].path), "Audio/MPEG; charset=binary")
    assert report.kind is ReportKind.OK and report.audio_codec == "mp3"
