#!/usr/bin/env python3
"""Cost of deriving: metadata + placeholder + two WebP thumbnails of a cover, and a 1080p video's poster.

    PYTHONPATH=src .venv/bin/python bench/bench_derive.py [--runs 15] [--widths 320,640]

Runs through a one-worker MediaSandbox, as the worker will. For a 1080x1920 JPEG cover (photo-like:
gradients, texture, edges) it reports the median wall time per file seen by the caller (IPC
included), the median CPU time of the child, and the in-process split (probe, thumbnails,
placeholder). For a 15 s 1080p H.264 + AAC MP4 (made once with PyAV, cached under
/tmp/mediacache-bench-media/) it reports the poster's wall and CPU time. Then the peak RSS
(VmHWM) of the child process, and one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyvips

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from mediacache.media import MediaSandbox, ReportKind
from mediacache.media.derive import image_thumbnails
from mediacache.media.limits import Limits
from mediacache.media.placeholder import thumbhash_of
from mediacache.media.probe import probe

CACHE = Path("/tmp/mediacache-bench-media")


def make_cover(path: Path) -> Path:
    if not path.exists():
        x = pyvips.Image.xyz(1080, 1920)
        texture = pyvips.Image.gaussnoise(1080, 1920, sigma=40).gaussblur(1.5)
        gradient = (x[0] / 4).bandjoin([x[1] / 8, (x[0] + x[1]) / 12])
        edges = ((x[0] // 120 + x[1] // 160) % 2) * 60
        (gradient + texture + edges).cast("uchar").jpegsave(str(path), Q=85)
    return path


def make_video(path: Path, *, seconds: int = 15, fps: int = 30) -> Path:
    """1920x1080 H.264 (preset veryfast, keyframe every 2 s) + AAC; takes a minute or so, once."""
    if path.exists():
        return path
    partial = path.with_suffix(".partial.mp4")
    started = time.perf_counter()
    with av.open(str(partial), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 1920, 1080, "yuv420p"
        video.options = {"preset": "veryfast", "g": str(2 * fps), "crf": "23"}
        audio = container.add_stream("aac", rate=44100)
        yy, xx = np.mgrid[0:1080, 0:1920]
        rng = np.random.default_rng(7)
        grain = rng.integers(0, 24, size=(1080, 1920, 1), dtype=np.uint8)
        for i in range(seconds * fps):
            phase = i / fps
            red = (127 + 127 * np.sin(xx / 180 + phase)).astype(np.uint8)
            green = (127 + 127 * np.sin(yy / 140 - phase * 1.3)).astype(np.uint8)
            blue = ((xx + yy + i * 8) % 256).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(np.dstack([red, green, blue]) + grain, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        for start in range(0, seconds * 44100, 1024):
            t = np.arange(start, start + 1024) / 44100
            samples = (0.2 * np.sin(2 * math.pi * 440 * t)).astype(np.float32).reshape(1, -1)
            chunk = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = 44100, start, Fraction(1, 44100)
            for packet in audio.encode(chunk):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    partial.rename(path)
    print(f"made {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - started:.0f} s")
    return path


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def first_keyframe_bytes(path: Path) -> int:
    """The poster's cost is mostly decoding this one picture, so its size says how hard the clip is."""
    with av.open(str(path)) as container:
        for packet in container.demux(container.streams.video[0]):
            if packet.is_keyframe:
                return packet.size
    return 0


def median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


def in_process_split(cover: Path, widths: tuple[int, ...], runs: int) -> dict[str, float]:
    """Where a cover's time goes, measured in this process with the child's libvips settings."""
    pyvips.concurrency_set(1)
    pyvips.cache_set_max(0)
    probe_s, thumbs_s, placeholder_s = [], [], []
    for _ in range(runs + 1):
        t0 = time.perf_counter()
        found = probe(str(cover), "image/jpeg", Limits())
        t1 = time.perf_counter()
        assert found.width and found.height
        rendered = image_thumbnails(str(cover), widths, source_width=found.width, source_height=found.height,
                                    heif_compression=None, has_icc=found.has_icc)
        t2 = time.perf_counter()
        thumbhash_of(rendered.smallest)
        t3 = time.perf_counter()
        probe_s.append(t1 - t0)
        thumbs_s.append(t2 - t1)
        placeholder_s.append(t3 - t2)
    return {"probe_ms": median_ms(probe_s[1:]), "thumbnails_ms": median_ms(thumbs_s[1:]),
            "placeholder_ms": median_ms(placeholder_s[1:])}


async def through_sandbox(path: Path, content_type: str, widths: tuple[int, ...], runs: int,
                          sandbox: MediaSandbox) -> dict[str, object]:
    walls, cpus = [], []
    report = None
    for i in range(runs + 1):  # the first run warms the child's code paths and is not counted
        # The child's own CPU clock, read in the child around the file (all its threads count).
        cpu0 = await sandbox.run(time.process_time)
        t0 = time.perf_counter()
        report = await sandbox.analyze(path, content_type, widths=widths)
        wall = time.perf_counter() - t0
        cpu = await sandbox.run(time.process_time) - cpu0
        assert report.kind is ReportKind.OK, report.reason
        if i:
            walls.append(wall)
            cpus.append(cpu)
    assert report is not None
    return {"wall_ms": median_ms(walls), "cpu_ms": median_ms(cpus), "runs": runs,
            "derivatives": [[d.kind, d.width, d.height, len(d.data)] for d in report.derivatives],
            "placeholder": report.placeholder}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--video-runs", type=int, default=7)
    parser.add_argument("--widths", default="320,640")
    args = parser.parse_args()
    widths = tuple(int(w) for w in args.widths.split(","))
    CACHE.mkdir(exist_ok=True)
    cover = make_cover(CACHE / "cover-1080x1920.jpg")
    video = make_video(CACHE / "clip-1080p-15s.mp4")

    split = in_process_split(cover, widths, args.runs)
    print(f"cover, in process: probe {split['probe_ms']} ms, thumbnails {split['thumbnails_ms']} ms, "
          f"placeholder {split['placeholder_ms']} ms (medians of {args.runs})")
    async with MediaSandbox(workers=1) as sandbox:
        (pid,) = sandbox.child_pids()
        idle_rss = peak_rss_mib(pid)
        image = await through_sandbox(cover, "image/jpeg", widths, args.runs, sandbox)
        print(f"cover 1080x1920 JPEG -> metadata + placeholder + {len(widths)} WebP thumbnails: "
              f"wall {image['wall_ms']} ms, child CPU {image['cpu_ms']} ms (medians of {args.runs})")
        print(f"  derivatives (kind, width, height, bytes): {image['derivatives']}")
        image_rss = peak_rss_mib(pid)
        poster = await through_sandbox(video, "video/mp4", widths, args.video_runs, sandbox)
        print(f"15 s 1080p MP4 -> metadata + placeholder + posters: wall {poster['wall_ms']} ms, "
              f"child CPU {poster['cpu_ms']} ms (medians of {args.video_runs})")
        keyframe = first_keyframe_bytes(video)
        print(f"  derivatives: {poster['derivatives']}; first keyframe {keyframe / 1000:.0f} KB "
              "(this clip's grain makes it a hard one)")
        video_rss = peak_rss_mib(pid)
    print(f"child peak RSS: {idle_rss:.0f} MiB after start-up, {image_rss:.0f} MiB after the covers, "
          f"{video_rss:.0f} MiB after the video")
    print(json.dumps({
        "bench": "derive", "cpus": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 2),
        "pyvips": pyvips.__version__, "libvips": ".".join(str(pyvips.version(i)) for i in range(3)),
        "av": av.__version__, "widths": list(widths),
        "cover": {**split, "wall_ms": image["wall_ms"], "cpu_ms": image["cpu_ms"], "runs": args.runs,
                  "derivatives": image["derivatives"]},
        "video_poster": {"wall_ms": poster["wall_ms"], "cpu_ms": poster["cpu_ms"], "runs": args.video_runs,
                         "first_keyframe_bytes": keyframe, "derivatives": poster["derivatives"]},
        "child_peak_rss_mib": {"idle": round(idle_rss), "after_cover": round(image_rss),
                               "after_video": round(video_rss)},
    }))


if __name__ == "__main__":  # the sandbox spawns children, which import this module again
    asyncio.run(main())
