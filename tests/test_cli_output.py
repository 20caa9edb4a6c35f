"""Output that fits logs: refusals on one line when stderr is a pipe, and `--log-format json` lines."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from mediacache.cli.logs import JsonFormatter, error_line
from tests.support.origin import Origin
from tests.support.processes import cli, spawn_worker, wait_for_log
from tests.support.services import SettingsFactory
from tests.support.waiting import wait_until


def test_error_line_folds_any_whitespace() -> None:
    assert error_line("the database\n  sqlite:///x is\tbehind:  run it") == "the database sqlite:///x is behind: run it"


def test_json_formatter_keeps_extras_and_folds_tracebacks() -> None:
    import logging

    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = logging.LogRecord("mediacache.worker", logging.ERROR, __file__, 1, "asset %s failed", ("a1",),
                                   exc_info=__import__("sys").exc_info())
    record.asset_id = "a1"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "asset a1 failed" and entry["asset_id"] == "a1" and entry["level"] == "error"
    assert entry["logger"] == "mediacache.worker" and "ValueError: boom" in entry["exc_info"] and entry["time"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_refused_start_up_is_one_line_on_a_pipe(make_settings: SettingsFactory, tmp_path: Path) -> None:
    # A long path: Rich used to wrap the message at 80 columns, splitting the fix from the problem.
    deep = tmp_path / ("a-rather-long-directory-name-" * 6) / "nested"
    deep.mkdir(parents=True)
    settings = make_settings(database_url=f"sqlite:///{deep / 'empty.db'}")
    done = cli(settings, "worker")
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and "empty.db" in lines[0] and "mediacache db upgrade" in lines[0]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_worker_log_format_json_is_one_object_per_line(
        make_settings: SettingsFactory, tmp_path: Path, origin: Origin) -> None:
    from mediacache.service import MediaCache

    settings = make_settings()
    log = tmp_path / "worker.log"
    # The cache queue only: a derive worker stopped while it is still starting leaves a Redis
    # connection that the interpreter reports (not as JSON) at exit.
    proc = spawn_worker(settings, log, "--log-format", "json", "--concurrency", "2", "--queue", "cache")
    try:
        await wait_for_log(log, "worker ready", proc)
        async with MediaCache(settings) as mc:
            asset_id = await mc.cache_image(origin.url("/status/404"))

        async def failure_logged() -> bool:
            return str(asset_id) in log.read_text()
        await wait_until(failure_logged, what="the failed attempt in the worker log")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    text = log.read_text()
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert entries and all({"time", "level", "logger", "message"} <= e.keys() for e in entries)
    assert any(e["message"].startswith("worker ready") for e in entries)
    assert any(e.get("asset_id") == str(asset_id) and e["level"] == "warning" for e in entries), entries
