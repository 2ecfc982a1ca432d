"""Safe resume: rerunning the same training command after a SIGKILL continues from the newest COMPLETE checkpoint
(plugins/resume.py) and ends with the same losses and weights as a run that was never interrupted.

The training runs are the real `llamafactory-cli train` on the tiny Qwen2.5-VL twin, in subprocesses.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import BIN, cli_env, run_cli

from vlmrecipes.plugins.resume import incomplete, last_complete_checkpoint

STEPS, SAVE_STEPS = 8, 2
# transformers' own get_last_checkpoint (the hook, and so our patch, off)
UPSTREAM_LAST_CHECKPOINT = "import sys; from transformers.trainer_utils import get_last_checkpoint; " \
                           "print(get_last_checkpoint(sys.argv[1]))"


def _recipe(path: Path, model: Path, dataset_dir: Path, output_dir: Path) -> Path:
    """A LoRA SFT recipe on the demo shapes as our recipes write it (no overwrite_output_dir): a few CPU steps, a
    checkpoint every SAVE_STEPS, fixed seeds."""
    path.write_text("\n".join([
        f"model_name_or_path: {model}", "stage: sft", "do_train: true", "finetuning_type: lora", "lora_target: all",
        "dataset: demo_shapes_train", f"dataset_dir: {dataset_dir}", "template: qwen2_vl", "cutoff_len: 256",
        "max_samples: 32", "image_max_pixels: 3136", f"output_dir: {output_dir}",
        "per_device_train_batch_size: 2", f"max_steps: {STEPS}", f"save_steps: {SAVE_STEPS}", "logging_steps: 1",
        "learning_rate: 1.0e-3", "seed: 42", "report_to: none", "preprocessing_num_workers: 1",
        "dataloader_num_workers: 0", "overwrite_cache: true", ""]))
    return path


def _losses(output_dir: Path) -> dict[int, float]:
    """Step -> loss from LLaMA-Factory's trainer_log.jsonl (appended to on resume: the resumed steps come last)."""
    lines = (output_dir / "trainer_log.jsonl").read_text().splitlines()
    return {entry["current_steps"]: entry["loss"] for entry in map(json.loads, lines) if "loss" in entry}


def _adapter(output_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(output_dir / "adapter_model.safetensors")


def _half_write(source: Path, target: Path) -> None:
    """What a SIGKILL in the middle of transformers' `_save_checkpoint` leaves: the folder, weights cut short, no
    trainer_state.json (written last)."""
    shutil.copytree(source, target)
    (target / "trainer_state.json").unlink()
    weights = target / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def test_incomplete_checkpoints_are_skipped(tmp_path):
    """Without training: what makes a checkpoint incomplete, on safetensors files written by safetensors itself."""
    import torch
    from safetensors.torch import save_file

    for step in (2, 4, 6, 8):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        save_file({"w": torch.zeros(64, 64)}, folder / "adapter_model.safetensors")
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    assert incomplete(tmp_path / "checkpoint-8") is None
    (tmp_path / "checkpoint-10").mkdir()  # the folder is created first
    (tmp_path / "checkpoint-8" / "trainer_state.json").write_text('{"global_st')
    weights = tmp_path / "checkpoint-6" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1])
    assert "no trainer_state.json" in incomplete(tmp_path / "checkpoint-10")
    assert "cut short" in incomplete(tmp_path / "checkpoint-8")
    assert "shorter than its header" in incomplete(tmp_path / "checkpoint-6")
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    upstream = subprocess.run([str(BIN / "python"), "-c", UPSTREAM_LAST_CHECKPOINT, str(tmp_path)], check=True,
                              env=cli_env(VLMR_NO_AUTOLOAD="1"), capture_output=True, text=True).stdout.strip()
    assert upstream == str(tmp_path / "checkpoint-10")


@pytest.mark.slow
def test_rerunning_a_killed_training_resumes_from_the_last_complete_checkpoint(tmp_path, tiny_model, demo_data):
    model, dataset_dir = tiny_model("qwen2_5_vl"), demo_data()
    straight = tmp_path / "straight"
    run_cli(["llamafactory-cli", "train", str(_recipe(tmp_path / "a.yaml", model, dataset_dir, straight))])

    killed = tmp_path / "killed"
    command = [str(BIN / "llamafactory-cli"), "train", str(_recipe(tmp_path / "b.yaml", model, dataset_dir, killed))]
    proc = subprocess.Popen(command, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    saved = killed / f"checkpoint-{2 * SAVE_STEPS}"
    try:
        deadline = time.monotonic() + 600
        while not (saved / "trainer_state.json").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # between two checkpoints; the whole session: no worker survives
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training ended before it could be killed"
    assert not (killed / "adapter_model.safetensors").exists()
    next_save = killed / f"checkpoint-{3 * SAVE_STEPS}"
    assert not next_save.exists(), "killed too late: the next checkpoint was already being saved"
    _half_write(saved, next_save)  # as if the kill had come during the next save
    upstream = subprocess.run([str(BIN / "python"), "-c", UPSTREAM_LAST_CHECKPOINT, str(killed)], check=True,
                              env=cli_env(VLMR_NO_AUTOLOAD="1"), capture_output=True, text=True).stdout.strip()
    assert upstream == str(next_save)  # LLaMA-Factory's automatic resume would load the half-written one

    # The same command again: LLaMA-Factory resumes by itself, from the newest complete checkpoint.
    rerun = run_cli(command)
    log = rerun.stdout + rerun.stderr
    assert f"Resuming training from {saved}." in log, log[-3000:]
    assert f"not resuming from {next_save}: no trainer_state.json" in log
    expected, got = _losses(straight), _losses(killed)
    assert max(expected) == max(got) == STEPS
    for step in range(2 * SAVE_STEPS + 1, STEPS + 1):
        assert got[step] == pytest.approx(expected[step], rel=1e-4, abs=1e-5), step
    reference, resumed = _adapter(straight), _adapter(killed)
    assert reference.keys() == resumed.keys() and reference
    for name, tensor in reference.items():
        assert (tensor - resumed[name]).abs().max().item() < 1e-5, name
