"""The tree passes ruff as pyproject.toml configures it: imports sorted, no unused import or variable, no line
over 120 characters, no undefined name."""

from __future__ import annotations

import subprocess
import sys

from helpers import REPO


def test_ruff_check_is_clean():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, f"`ruff check .` (`ruff check --fix .` fixes what it can):\n{proc.stdout[-6000:]}"
