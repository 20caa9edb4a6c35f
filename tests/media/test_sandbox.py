"""The sandbox: files are analysed in child processes; a crash, a hang or an allocation spree costs a child."""

from __future__ import annotations

import asyncio
import ctypes
import os
import time
from collections.abc import Callable

import pytest

from mediacache.media import MediaSandbox, ReportKind, SandboxClosedError, SandboxError
from tests.media.makers import Sample

GiB = 1024**3


async def test_analyze_runs_in_a_child(make_sandbox: Callable[..., MediaSandbox], samples: dict[str, Sample]) -> None:
    sandbox = make_sandbox()
    await sandbox.start()
    child = await sandbox.run(os.getpid)
    assert child != os.getpid() and sandbox.child_pids() == [child]
    sample = samples["jpeg"]
    report = await sandbox.analyze(sample.path, sample.content_type, widths=(160, 320))
    assert report.kind is ReportKind.OK
    assert (report.width, report.height) == (1200, 800)
    assert [d.width for d in report.derivatives] == [320, 160]
    assert report.placeholder


async def test_bombs_are_refused_quickly_through_the_sandbox(make_sandbox: Callable[..., MediaSandbox],
                                                              bombs: dict[str, Sample]) -> None:
    sandbox = make_sandbox()
    await sandbox.start()
    expected = {"png_50k": ReportKind.TOO_LARGE, "gif_10k_frames": ReportKind.TOO_LARGE,
                "jpeg_truncated": ReportKind.CORRUPT}
    for name, kind in expected.items():
        start = time.perf_counter()
        report = await sandbox.analyze(bombs[name].path, bombs[name].content_type)
        took_s = time.perf_counter() - start
        print(f"\n{name}: {report.kind} in {took_s * 1000:.1f} ms through the sandbox (decode plus IPC)")
        assert report.kind is kind
        assert took_s < 2.0


@pytest.mark.parametrize("crash", [(os.abort,), (ctypes.string_at, 0)], ids=["abort", "segfault"])
async def test_a_crashing_child_is_replaced(make_sandbox: Callable[..., MediaSandbox], samples: dict[str, Sample],
                                            crash: tuple[object, ...]) -> None:
    sandbox = make_sandbox()
    await sandbox.start()
    before = sandbox.child_pids()
    fn, *args = crash
    with pytest.raises(SandboxError, match="crashed") as caught:
        await sandbox.run(fn, *args)  # type: ignore[arg-type]
    assert not caught.value.timed_out
    report = await sandbox.analyze(samples["jpeg"].path, "image/jpeg")
    assert report.kind is ReportKind.OK
    assert sandbox.replaced == 1 and sandbox.child_pids() != before


async def test_a_child_past_its_time_limit_is_killed(make_sandbox: Callable[..., MediaSandbox],
                                                     samples: dict[str, Sample]) -> None:
    sandbox = make_sandbox()
    await sandbox.start()
    (hung,) = sandbox.child_pids()
    start = time.perf_counter()
    with pytest.raises(SandboxError, match=r"longer than 0\.5 s") as caught:
        await sandbox.run(time.sleep, 60, timeout_s=0.5)
    assert caught.value.timed_out
    assert time.perf_counter() - start < 5
    report = await sandbox.analyze(samples["jpeg"].path, "image/jpeg")
    assert report.kind is ReportKind.OK
    assert hung not in sandbox.child_pids()
    with pytest.raises(ProcessLookupError):
        os.kill(hung, 0)


async def test_analyze_reports_a_time_out_as_corrupt(make_sandbox: Callable[..., MediaSandbox],
                                                     samples: dict[str, Sample]) -> None:
    sandbox = make_sandbox()
    await sandbox.start()
    report = await sandbox.analyze(samples["mp4"].path, "video/mp4", timeout_s=0.000_001)
    assert report.kind is ReportKind.CORRUPT and report.timed_out
    assert (await sandbox.analyze(samples["mp4"].path, "video/mp4")).kind is ReportKind.OK


async def test_memory_ceiling_stops_a_runaway_allocation(make_sandbox: Callable[..., MediaSandbox]) -> None:
    sandbox = make_sandbox(memory_bytes=int(1.5 * GiB))
    await sandbox.start()
    with pytest.raises(MemoryError):
        await sandbox.run(bytearray, 2 * GiB)
    assert await sandbox.run(len, b"still alive") == 11
    assert sandbox.replaced == 0


async def test_workers_run_side_by_side(make_sandbox: Callable[..., MediaSandbox], samples: dict[str, Sample]) -> None:
    sandbox = make_sandbox(workers=2)
    await sandbox.start()
    assert len(set(sandbox.child_pids())) == 2
    names = ["jpeg", "heic", "gif", "mp4", "mp3", "webp"]
    reports = await asyncio.gather(*(sandbox.analyze(samples[n].path, samples[n].content_type) for n in names))
    assert [r.kind for r in reports] == [ReportKind.OK] * len(names)
    assert [r.family for r in reports] == ["image", "image", "image", "video", "audio", "image"]


async def test_children_are_recycled_after_a_number_of_files(make_sandbox: Callable[..., MediaSandbox]) -> None:
    sandbox = make_sandbox(recycle_after=2)
    await sandbox.start()
    pids = [await sandbox.run(os.getpid) for _ in range(4)]
    assert pids[0] == pids[1] != pids[2] == pids[3]
    assert sandbox.replaced == 0


async def test_a_closed_sandbox_refuses_work(make_sandbox: Callable[..., MediaSandbox]) -> None:
    sandbox = make_sandbox()
    with pytest.raises(SandboxClosedError):
        await sandbox.run(os.getpid)
    await sandbox.start()
    (child,) = sandbox.child_pids()
    await sandbox.close()
    with pytest.raises(SandboxClosedError):
        await sandbox.run(os.getpid)
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
