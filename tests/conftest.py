"""Session fixtures: tiny models and demo data built once (cached under .cache/, locked across xdist workers)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from filelock import FileLock

sys.path.insert(0, str(Path(__file__).parent))
from helpers import REPO  # noqa: E402

CACHE = REPO / ".cache" / "tests"


@pytest.fixture(scope="session", autouse=True)
def checkout_workdir():
    """The checkout is the tests' working directory (helpers sets VLMR_HOME to it): `vlmr init .` there once, so
    its dataset_info/dataset_info.json (git-ignored) holds the bundled entries smoke runs need."""
    from vlmrecipes.workdir import init

    init(REPO)


def _cached(name: str, build) -> Path:
    """Build `name` under CACHE once; concurrent xdist workers wait on a file lock."""
    CACHE.mkdir(parents=True, exist_ok=True)
    out = CACHE / name
    with FileLock(str(out) + ".lock"):
        if not (out / ".complete").exists():
            build(out)
            (out / ".complete").write_text("ok")
    return out


@pytest.fixture(scope="session")
def tiny_model():
    """tiny_model(kind) -> Path of a tiny random-weight model of that kind (see `vlmr tiny --help`)."""
    from vlmrecipes.tiny import build_tiny

    def get(kind: str, seed: int = 0) -> Path:
        return _cached(f"tiny-{kind}-seed{seed}", lambda out: build_tiny(kind, out, seed))

    return get


@pytest.fixture(scope="session")
def demo_data():
    """demo_data() -> the dataset_info dir with every bundled demo dataset generated."""
    from vlmrecipes.demo_data import generate_all

    def get() -> Path:
        _cached("demo-data-stamp", lambda out: (out.mkdir(parents=True, exist_ok=True), generate_all()))
        return REPO / "dataset_info"

    return get


@pytest.fixture(scope="session")
def trained_demo(tmp_path_factory):
    """The output folder of one real `vlmr demo` run (3 epochs, ~3 min on one core), shared by every test of this
    pytest run: xdist workers meet in their common base temp dir and wait on a file lock. Returns (folder, stdout)."""
    from helpers import run_cli

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # this run's folder, never a previous one
    out = root / "vlmr-demo"
    with FileLock(str(out) + ".lock"):
        if not (out / "stdout.txt").exists():
            proc = run_cli(["vlmr", "demo", "--out", str(out)], timeout=1200)
            (out / "stderr.txt").write_text(proc.stderr)  # the commands and progress lines (test_demo.py)
            (out / "stdout.txt").write_text(proc.stdout)
    return out, (out / "stdout.txt").read_text()
