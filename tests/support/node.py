"""Node BullMQ for the interop tests: `npm ci` in tests/interop once when its node_modules is missing.

In CI (`CI` set) a Node or npm that cannot provide it fails the tests; elsewhere they are skipped,
with the reason and the command that fixes it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

INTEROP_DIR = Path(__file__).resolve().parent.parent / "interop"
NPM_TIMEOUT_S = 300


def _installed() -> bool:
    return (INTEROP_DIR / "node_modules" / "bullmq" / "package.json").exists()


def ensure_node_bullmq() -> None:
    """Installs the locked Node BullMQ if needed; fails (CI) or skips (elsewhere) when it cannot."""
    problem = None
    if shutil.which("node") is None or shutil.which("npm") is None:
        problem = "node and npm are not installed"
    elif not _installed():
        try:
            done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=INTEROP_DIR,
                                  capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            problem = f"`npm ci` in {INTEROP_DIR} took longer than {NPM_TIMEOUT_S} s"
        else:
            if done.returncode != 0 or not _installed():
                problem = f"`npm ci` in {INTEROP_DIR} failed: {(done.stderr or done.stdout).strip()[-500:]}"
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"the Node interop tests need Node BullMQ, and {problem}", pytrace=False)
    pytest.skip(f"{problem}; run `npm ci` in tests/interop to run these tests")
