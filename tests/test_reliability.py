"""Faults: training killed with SIGKILL resumes to the same result; a converter killed mid-write loses nothing.

Both run the real CLIs in subprocesses (`llamafactory-cli train` on the tiny Qwen2.5-VL twin, `vlmr convert`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import BIN, cli_env, run_cli
from PIL import Image

STEPS, SAVE_STEPS = 8, 2


def _recipe(path: Path, model: Path, dataset_dir: Path, output_dir: Path) -> Path:
    """A LoRA SFT recipe on the demo shapes: a few CPU steps, a checkpoint every SAVE_STEPS, fixed seeds."""
    path.write_text("\n".join([
        f"model_name_or_path: {model}", "stage: sft", "do_train: true", "finetuning_type: lora", "lora_target: all",
        "dataset: demo_shapes_train", f"dataset_dir: {dataset_dir}", "template: qwen2_vl", "cutoff_len: 256",
        "max_samples: 32", "image_max_pixels: 3136", f"output_dir: {output_dir}", "overwrite_output_dir: true",
        "per_device_train_batch_size: 2", f"max_steps: {STEPS}", f"save_steps: {SAVE_STEPS}", "logging_steps: 1",
        "learning_rate: 1.0e-3", "seed: 42", "report_to: none", "preprocessing_num_workers: 1",
        "dataloader_num_workers: 0", "overwrite_cache: true", ""]))
    return path


def _losses(output_dir: Path) -> dict[int, float]:
    lines = (output_dir / "trainer_log.jsonl").read_text().splitlines()
    return {entry["current_steps"]: entry["loss"] for entry in map(json.loads, lines) if "loss" in entry}


def _adapter(output_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(output_dir / "adapter_model.safetensors")


def _complete_checkpoints(output_dir: Path) -> list[Path]:
    """Checkpoints whose save finished: transformers writes trainer_state.json last, so a checkpoint killed
    mid-save has none (and transformers' `get_last_checkpoint` would still pick it)."""
    found = [p for p in output_dir.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


@pytest.mark.slow
def test_sigkilled_training_resumes_to_the_same_result(tmp_path, tiny_model, demo_data):
    model, dataset_dir = tiny_model("qwen2_5_vl"), demo_data()
    straight = tmp_path / "straight"
    run_cli(["llamafactory-cli", "train", str(_recipe(tmp_path / "a.yaml", model, dataset_dir, straight))])

    killed = tmp_path / "killed"
    recipe = _recipe(tmp_path / "b.yaml", model, dataset_dir, killed)
    proc = subprocess.Popen([str(BIN / "llamafactory-cli"), "train", str(recipe)], env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not _complete_checkpoints(killed) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole session: no worker survives
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training ended before it could be killed"
    assert not (killed / "adapter_model.safetensors").exists()
    checkpoint = _complete_checkpoints(killed)[-1]
    assert int(checkpoint.name.split("-")[1]) < STEPS

    # The README's resume command: the same recipe plus resume_from_checkpoint on the command line.
    run_cli(["llamafactory-cli", "train", str(recipe), f"resume_from_checkpoint={checkpoint}"])
    resumed_from = int(checkpoint.name.split("-")[1])
    expected, got = _losses(straight), _losses(killed)
    assert max(expected) == max(got) == STEPS
    for step in range(resumed_from + 1, STEPS + 1):
        assert got[step] == pytest.approx(expected[step], rel=1e-4, abs=1e-5), step
    reference, resumed = _adapter(straight), _adapter(killed)
    assert reference.keys() == resumed.keys() and reference
    for name, tensor in reference.items():
        assert (tensor - resumed[name]).abs().max().item() < 1e-5, name


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
    before = {p: p.read_bytes() for p in (out / "train.jsonl", out / "train.skipped.json", dataset_dir / "dataset_info.json")}

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
