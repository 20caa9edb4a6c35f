"""The benchmarks still run: tiny versions of the memory and chaos runs. Their speed is not judged here;
what the chaos run with duplicated URLs must end with is."""

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
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_memory_benchmark_caches_a_file_and_reports_its_peak() -> None:
    result = _run(str(BENCH / "bench_memory.py"), "--size-mb", "8")
    assert result["status"] == "CACHED" and result["sha256_ok"] is True
    assert float(result["worker_peak_rss_mib"]) >= float(result["worker_idle_rss_mib"]) > 0  # type: ignore[arg-type]


def test_chaos_run_ends_with_everything_cached_and_nothing_duplicated() -> None:
    result = _run(str(BENCH / "chaos.py"), "--assets", "60", "--workers", "2", "--kill-every-s", "1.5",
                  "--deadline-s", "120")
    assert (result["cached"], result["stuck"], result["duplicated"], result["sha256_mismatches"]) == (60, 0, 0, 0)


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_chaos_run_with_half_the_urls_duplicated_downloads_and_stores_each_file_once(db_url: str) -> None:
    """40 URLs: 20 files, 10 of them behind a second, differently signed link (URL deduplication
    answers those with the first link's asset) and 10 copied to another path (new assets that
    content deduplication lets share the stored object), enqueued while workers are SIGKILLed."""
    result = _run(str(BENCH / "chaos.py"), "--assets", "40", "--duplicates", "0.5", "--workers", "2",
                  "--kill-every-s", "1.5", "--deadline-s", "120", "--database-url", db_url)
    print(f"\nchaos with duplicates: {result}")
    assert (result["urls"], result["resigned_links"], result["path_copies"]) == (40, 10, 10)
    assert (result["assets"], result["cached"], result["failed"], result["stuck"]) == (30, 30, 0, 0)
    assert result["url_dedup_hits"] == 10
    assert (result["objects"], result["contents"]) == (20, 20)
    assert (result["orphan_objects"], result["missing_objects"]) == (0, 0)
    assert (result["duplicated"], result["sha256_mismatches"]) == (0, 0)
    # Every asset downloaded, a second time only where a kill cut an attempt short.
    assert 30 <= int(result["downloads"]) <= int(result["attempts"])  # type: ignore[call-overload]
    assert result["kills"] >= 1  # type: ignore[operator]
    assert result["failed_checks"] == []
