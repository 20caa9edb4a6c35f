"""The placeholder is a ThumbHash that decodes back to the picture's aspect, colours and alpha."""

from __future__ import annotations

import base64

import pytest
import thash

from mediacache.media import ReportKind, analyze_file
from tests.media.makers import Sample


def _hash(sample: Sample) -> list[int]:
    report = analyze_file(str(sample.path), sample.content_type)
    assert report.kind is ReportKind.OK and report.placeholder
    assert len(report.placeholder) <= 40  # ~25 bytes, base64
    return list(base64.b64decode(report.placeholder))


@pytest.mark.parametrize("name", ["jpeg", "jpeg_rotated", "png_alpha", "heic", "gif", "mp4", "mp4_rotated"])
def test_placeholder_keeps_the_aspect(samples: dict[str, Sample], name: str) -> None:
    sample = samples[name]
    assert sample.width and sample.height
    ratio = thash.thumb_hash_to_approximate_aspect_ratio(_hash(sample))
    assert ratio == pytest.approx(sample.width / sample.height, rel=0.15)


def test_placeholder_keeps_alpha_and_colour(samples: dict[str, Sample]) -> None:
    average = thash.thumb_hash_to_average_rgba(_hash(samples["png_alpha"]))
    assert average is not None
    r, g, b, a = average
    assert a == pytest.approx(128 / 255, abs=0.1)
    # Red, green, blue and white quadrants average to a light grey.
    assert r == pytest.approx(g, abs=0.15) and g == pytest.approx(b, abs=0.15)


def test_placeholder_decodes_to_pixels(samples: dict[str, Sample]) -> None:
    width, height, rgba = thash.thumb_hash_to_rgba(_hash(samples["jpeg"]))
    assert width > height and len(rgba) == width * height * 4
