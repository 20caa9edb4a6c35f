"""The event loop of the long-running commands: uvloop by default, asyncio's on request, a clear error when missing."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
import uvloop

from mediacache.cli.running import event_loop_factory
from mediacache.errors import ConfigError
from mediacache.service import MediaCache
from tests.support.assets import all_in
from tests.support.origin import Origin, sha256_of
from tests.support.processes import spawn_worker, wait_for_log
from tests.support.services import SettingsFactory
from tests.support.waiting import wait_until


def test_auto_and_uvloop_pick_uvloop_and_asyncio_picks_the_standard_loop() -> None:
    assert event_loop_factory("auto") is uvloop.new_event_loop
    assert event_loop_factory("uvloop") is uvloop.new_event_loop
    assert event_loop_factory("asyncio") is None


def test_without_uvloop_auto_falls_back_and_an_explicit_uvloop_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as on Windows, where it is not installed
    assert event_loop_factory("auto") is None
    fix = r"MEDIACACHE_EVENT_LOOP=uvloop.*pip install uvloop.*MEDIACACHE_EVENT_LOOP=asyncio"
    with pytest.raises(ConfigError, match=fix):
        event_loop_factory("uvloop")


@pytest.mark.parametrize(("setting", "loop"), [(None, "uvloop"), ("asyncio", "asyncio")])
async def test_the_worker_downloads_on_the_chosen_loop(setting: str | None, loop: str, make_settings: SettingsFactory,
                                                       origin: Origin, tmp_path: Path) -> None:
    settings = make_settings()
    log = tmp_path / "worker.log"
    async with MediaCache(settings) as mc:
        asset_id = await mc.cache_image(origin.url("/media/3.jpg?size=20000"))
        proc = spawn_worker(settings, log, **({"MEDIACACHE_EVENT_LOOP": setting} if setting else {}))
        try:
            await wait_for_log(log, "worker ready", proc)
            await wait_until(lambda: all_in(mc, [asset_id]), timeout_s=30, what="the download")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        rec = await mc.get_asset(asset_id)
    assert rec is not None and rec.sha256 == sha256_of("media", 3, 20000)
    assert f"loop={loop}" in log.read_text()
    assert proc.returncode == 0, log.read_text()
