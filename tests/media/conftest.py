"""Fixtures of the media tests: generated media files, made once per session, and a sandbox factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from mediacache.media import MediaSandbox
from tests.media import makers
from tests.media.makers import Sample


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Sample]:
    """Every generated file with what its generator was told; widths and heights as displayed."""
    d = tmp_path_factory.mktemp("media")
    return {
        "jpeg": Sample(makers.jpeg(d / "photo.jpg", 1200, 800), "image/jpeg", 1200, 800, 1),
        # Stored 1200x800 with EXIF orientation 6 (turn 90 degrees clockwise): displayed 800x1200.
        "jpeg_rotated": Sample(makers.jpeg(d / "rotated.jpg", 1200, 800, orientation=6), "image/jpeg", 800, 1200, 1),
        "png_alpha": Sample(makers.png(d / "alpha.png", 500, 300, alpha=True), "image/png", 500, 300, 1),
        "png_small": Sample(makers.png(d / "small.png", 200, 150), "image/png", 200, 150, 1),
        "webp": Sample(makers.webp(d / "still.webp", 700, 700), "image/webp", 700, 700, 1),
        "avif": Sample(makers.avif(d / "photo.avif", 900, 600), "image/avif", 900, 600, 1),
        "heic": Sample(makers.heic(d / "photo.heic", 900, 600), "image/heic", 900, 600, 1),
        "gif": Sample(makers.gif(d / "anim.gif", 400, 300, frames=5), "image/gif", 400, 300, 5),
        "webp_animated": Sample(makers.animated_webp(d / "anim.webp", 400, 300, frames=4), "image/webp", 400, 300, 4),
        "apng": Sample(makers.apng(d / "anim.png", 400, 300, frames=3), "image/png", 400, 300, 3),
        "mp4": Sample(makers.mp4(d / "clip.mp4", 640, 360, seconds=2.0), "video/mp4", 640, 360, None, 2.0),
        # Stored landscape with a display matrix turning it 90 degrees clockwise, as phones record.
        "mp4_rotated": Sample(makers.mp4(d / "phone.mp4", 640, 360, seconds=1.0, rotation=-90, audio=False),
                              "video/mp4", 360, 640, None, 1.0),
        # iPhones record HEVC; web uploads are often VP9 in WebM.
        "mp4_hevc": Sample(makers.mp4(d / "iphone.mp4", 480, 270, seconds=1.0, codec="libx265"),
                           "video/mp4", 480, 270, None, 1.0),
        "webm_vp9": Sample(makers.mp4(d / "clip.webm", 480, 270, seconds=1.0, codec="libvpx-vp9"),
                           "video/webm", 480, 270, None, 1.0),
        "mp3": Sample(makers.mp3(d / "tone.mp3", seconds=2.5), "audio/mpeg", None, None, None, 2.5),
    }


@pytest.fixture(scope="session")
def bombs(tmp_path_factory: pytest.TempPathFactory, samples: dict[str, Sample]) -> dict[str, Sample]:
    d = tmp_path_factory.mktemp("bombs")
    return {
        "png_50k": Sample(makers.png_bomb(d / "bomb.png"), "image/png", 50_000, 50_000),
        "gif_10k_frames": Sample(makers.gif_frames_bomb(d / "frames.gif"), "image/gif", 1, 1, 10_000),
        "jpeg_truncated": Sample(makers.truncated(samples["jpeg"].path, d / "truncated.jpg"), "image/jpeg"),
    }


@pytest.fixture
async def make_sandbox() -> AsyncIterator[Callable[..., MediaSandbox]]:
    """A factory of started sandboxes (call it, then `await sb.start()`); all are closed at the end."""
    made: list[MediaSandbox] = []

    def make(**options: object) -> MediaSandbox:
        sandbox = MediaSandbox(**options)  # type: ignore[arg-type]
        made.append(sandbox)
        return sandbox

    yield make
    for sandbox in made:
        await sandbox.close()
