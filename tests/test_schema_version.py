"""The schema version check reads the migrations' own files and the alembic_version row, without Alembic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from mediacache.db.schema import alembic_config, head_revision


def test_the_head_is_the_one_alembic_finds() -> None:
    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_two_heads_are_refused_with_their_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    for name, rev, down in (("0001_a.py", "0001", None), ("0002_b.py", "0002", "0001"), ("0003_c.py", "0003", "0001")):
        down_text = "None" if down is None else f'"{down}"'
        (versions / name).write_text(f'revision: str = "{rev}"\ndown_revision: str | None = {down_text}\n')
    monkeypatch.setattr("mediacache.db.schema.MIGRATIONS_DIR", tmp_path)
    head_revision.cache_clear()
    try:
        with pytest.raises(RuntimeError, match=r"has 2 heads \(\['0002', '0003'\]\)"):
            head_revision()
    finally:
        head_revision.cache_clear()


def test_the_worker_and_the_server_run_without_importing_alembic() -> None:
    # Alembic's script machinery is about 11 MiB of RSS in every process that imports it.
    code = ("import sys, mediacache.cli.app, mediacache.worker.runner, mediacache.api, mediacache.db.schema; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.strip() == "[]"
