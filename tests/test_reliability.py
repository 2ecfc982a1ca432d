"""Faults: a converter killed mid-write loses nothing (the real `vlmr convert` in subprocesses). Training killed
with SIGKILL and rerun: tests/test_resume.py."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from helpers import BIN, cli_env, run_cli
from PIL import Image


def _llava_input(root: Path, records: int, images: int) -> Path:
    """A LLaVA chat.json of `records` records cycling over `images` distinct small JPEGs."""
    (root / "images").mkdir(parents=True)
    for i in range(images):
        Image.new("RGB", (64, 48), (i % 256, (7 * i) % 256, 90)).save(root / "images" / f"{i}.jpg")
    rows = [{"id": str(i), "image": f"{i % images}.jpg", "conversations": [
        {"from": "human", "value": f"<image>\nWhat is in picture {i}?"}, {"from": "gpt", "value": f"colour {i}"}]}
        for i in range(records)]
    (root / "chat.json").write_text(json.dumps(rows))
    return root / "chat.json"


def test_sigkilled_converter_keeps_the_previous_output_and_reruns(tmp_path):
    dataset_dir = tmp_path / "dataset_info"
    small = _llava_input(tmp_path / "small", records=5, images=5)
    big = _llava_input(tmp_path / "big", records=20000, images=1500)
    args = ["--dataset-dir", str(dataset_dir), "--name", "ds", "--max-pixels", "1024"]
    run_cli(["vlmr", "convert", "llava", "--input", str(small), *args])
    out = dataset_dir / "ds"
    kept = (out / "train.jsonl", out / "train.skipped.json", dataset_dir / "dataset_info.json")
    before = {p: p.read_bytes() for p in kept}

    proc = subprocess.Popen([str(BIN / "vlmr"), "convert", "llava", "--input", str(big), *args], env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tmp_output = out / "train.jsonl.tmp"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and \
            not (tmp_output.exists() and tmp_output.stat().st_size > 20000):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the conversion finished before it could be killed"
    # The previous complete output is untouched, byte for byte, and still validates (media files included).
    assert {p: p.read_bytes() for p in before} == before
    run_cli(["vlmr", "validate", "ds_train", "--dataset-dir", str(dataset_dir)])
    # The interrupted run's partial file is only a .tmp that no dataset_info entry names.
    info = json.loads((dataset_dir / "dataset_info.json").read_text())
    assert info["ds_train"]["file_name"] == "ds/train.jsonl" and tmp_output.exists()

    run_cli(["vlmr", "convert", "llava", "--input", str(big), *args])
    assert len((out / "train.jsonl").read_text().splitlines()) == 20000
    assert not list(out.rglob("*.tmp"))
    run_cli(["vlmr", "validate", "ds_train", "--dataset-dir", str(dataset_dir)])
