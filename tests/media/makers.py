"""Media files made by the tests with the same libraries the code reads them with, plus hand-made bombs."""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import av.audio.stream
import av.video.stream
import numpy as np
import pillow_heif
import pyvips
from PIL import Image as PILImage


@dataclass(frozen=True)
class Sample:
    """A generated file and what its generator was told (sizes as displayed)."""

    path: Path
    content_type: str
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    duration_s: float | None = None


def quadrants(width: int, height: int, *, alpha: bool = False) -> pyvips.Image:
    """Red top-left, green top-right, blue bottom-left, white bottom-right: orientation is visible."""
    pixels = np.zeros((height, width, 4 if alpha else 3), dtype=np.uint8)
    top, left = slice(0, height // 2), slice(0, width // 2)
    bottom, right = slice(height // 2, height), slice(width // 2, width)
    pixels[top, left, 0] = 255
    pixels[top, right, 1] = 255
    pixels[bottom, left, 2] = 255
    pixels[bottom, right, :3] = 255
    if alpha:
        pixels[..., 3] = 128
    return pyvips.Image.new_from_array(pixels, interpretation="srgb")


def jpeg(path: Path, width: int, height: int, *, orientation: int | None = None) -> Path:
    image = quadrants(width, height)
    if orientation is not None:
        image = image.copy()
        image.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    image.jpegsave(str(path), Q=90)
    return path


def png(path: Path, width: int, height: int, *, alpha: bool = False) -> Path:
    quadrants(width, height, alpha=alpha).pngsave(str(path))
    return path


def webp(path: Path, width: int, height: int) -> Path:
    quadrants(width, height).webpsave(str(path), Q=90)
    return path


def avif(path: Path, width: int, height: int) -> Path:
    quadrants(width, height).heifsave(str(path), compression="av1", Q=60)
    return path


def heic(path: Path, width: int, height: int) -> Path:
    """An HEVC-coded HEIC, as iPhones write; pillow-heif's bundled x265 encodes it."""
    pixels = np.ndarray((height, width, 3), dtype=np.uint8, buffer=quadrants(width, height).write_to_memory())
    pillow_heif.from_pillow(PILImage.fromarray(pixels, "RGB")).save(str(path), quality=70)
    return path


def _animation(width: int, height: int, frames: int) -> pyvips.Image:
    """Frames stacked vertically with page-height set: libvips' layout of an animation. Odd frames are dimmed."""
    pages = [quadrants(width, height) * (0.5 if i % 2 else 1.0) for i in range(frames)]
    strip = pyvips.Image.arrayjoin(pages, across=1).cast("uchar").copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", height)
    strip.set_type(pyvips.GValue.array_int_type, "delay", [100] * frames)
    return strip


def gif(path: Path, width: int, height: int, frames: int = 1) -> Path:
    _animation(width, height, frames).gifsave(str(path))
    return path


def animated_webp(path: Path, width: int, height: int, frames: int) -> Path:
    _animation(width, height, frames).webpsave(str(path), Q=90)
    return path


def apng(path: Path, width: int, height: int, frames: int) -> Path:
    images = [PILImage.new("RGB", (width, height), (40 * i % 256, 100, 200)) for i in range(frames)]
    images[0].save(path, format="PNG", save_all=True, append_images=images[1:], duration=100)
    return path


def mp4(path: Path, width: int, height: int, *, seconds: float = 2.0, fps: int = 30, rotation: int | None = None,
        audio: bool = True, codec: str = "libx264") -> Path:
    """H.264 + AAC by default (the container follows the suffix: .webm takes libvpx-vp9 + libopus).

    `rotation` sets the display matrix (counter-clockwise degrees, as PyAV reads it).
    """
    with av.open(str(path), "w") as container:
        video = cast(av.video.stream.VideoStream, container.add_stream(codec, rate=fps))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {**_FAST.get(codec, {})}
        if rotation is not None:
            video.set_display_rotation(rotation)
        webm = path.suffix == ".webm"
        sound = None
        if audio:
            sound = cast(av.audio.stream.AudioStream,
                         container.add_stream("libopus" if webm else "aac", rate=48000 if webm else 44100))
        base = np.ndarray((height, width, 3), dtype=np.uint8, buffer=quadrants(width, height).write_to_memory())
        for i in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(np.roll(base, i, axis=1) if i else base, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if sound is not None:
            _tone(container, sound, seconds)
    return path


_FAST: dict[str, dict[str, str]] = {
    "libx264": {"preset": "ultrafast"},
    "libx265": {"preset": "ultrafast", "x265-params": "log-level=error"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
}


def mp3(path: Path, *, seconds: float = 2.5) -> Path:
    with av.open(str(path), "w", format="mp3") as container:
        _tone(container, container.add_stream("libmp3lame", rate=44100), seconds)
    return path


def _tone(container: av.container.OutputContainer, stream: av.audio.stream.AudioStream, seconds: float) -> None:
    # PyAV re-chunks what it is given into the encoder's frame size (1024 for AAC, 960 for Opus).
    rate, chunk = stream.codec_context.sample_rate, 1024
    total = round(seconds * rate)
    for start in range(0, total, chunk):
        n = min(chunk, total - start)
        t = (np.arange(start, start + n) / rate).astype(np.float32)
        samples = (0.2 * np.sin(2 * math.pi * 440 * t)).astype(np.float32).reshape(1, n)
        frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


# --- bombs and broken files, written byte by byte so they stay a few bytes long --------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(path: Path, width: int = 50_000, height: int = 50_000) -> Path:
    """A valid PNG header declaring width x height (8-bit RGB) over one row of data: ~100 bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" + b"\0" * 3 * min(width, 64))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))
    return path


def gif_frames_bomb(path: Path, frames: int = 10_000) -> Path:
    """A GIF89a of `frames` 1x1 frames (~20 bytes each): header, palette, then frame after frame."""
    header = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    # Graphic control extension (delay 10 cs), image descriptor 1x1 at 0,0, then the LZW-coded
    # pixel: minimum code size 2, one sub-block of 2 bytes, block terminator.
    frame = (b"\x21\xf9\x04\x00\x0a\x00\x00\x00" + b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
             + b"\x02\x02\x44\x01\x00")
    path.write_bytes(header + frame * frames + b"\x3b")
    return path


def truncated(source: Path, path: Path, fraction: float = 0.5) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path
