"""The benchmarks still run: tiny versions of the memory and chaos runs (figures are not judged here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Runs real worker and Redis processes, whatever fixtures its tests use.
pytestmark = pytest.mark.services

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _run(*args: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_memory_benchmark_caches_a_file_and_reports_its_peak() -> None:
    result = _run(str(BENCH / "bench_memory.py"), "--size-mb", "8")
    assert result["status"] == "CACHED" and result["sha256_ok"] is True
    assert float(result["worker_peak_rss_mib"]) >= float(result["worker_idle_rss_mib"]) > 0  # type: ignore[arg-type]


def test_chaos_run_ends_with_everything_cached_and_nothing_duplicated() -> None:
    result = _run(str(BENCH / "chaos.py"), "--assets", "60", "--workers", "2", "--kill-every-s", "1.5",
                  "--deadline-s", "120")
    assert (result["cached"], result["stuck"], result["duplicated"], result["sha256_mismatches"]) == (60, 0, 0, 0)
