"""`vlmr smoke` after `vlmr convert`: it trains on the user's converted records (a few of them), on a local model
given as `key=value`, prints the command it ran, shows progress, evaluates on the converted validation split and
writes a TensorBoard event file; before any conversion it falls back to the demo twins, and `--data own` says what
to convert."""

from __future__ import annotations

import json
import shlex

import pytest
from helpers import REPO, cli_env, run_cli

RECIPE = REPO / "recipes" / "emotion" / "qwen3_vl_4b_lora.yaml"  # FER2013: fer2013_train, eval on fer2013_validation
PIXELS = " ".join(str((i * 7) % 256) for i in range(48 * 48))


def _fer2013_csv(path, usages):
    """FER2013's Kaggle layout: emotion (0-6), 2304 space-separated grey values, Usage."""
    path.write_text("emotion,pixels,Usage\n" + "".join(f"{i % 7},{PIXELS},{u}\n" for i, u in enumerate(usages)))
    return path


def test_smoke_before_conversion_says_what_to_convert(tmp_path):
    proc = run_cli(["vlmr", "smoke", str(RECIPE), "--data", "own"], env=cli_env(VLMR_HOME=str(tmp_path)),
                   check=False)
    assert proc.returncode == 2
    assert "dataset 'fer2013_train': not registered with records" in proc.stderr and "--data demo" in proc.stderr


@pytest.mark.slow
def test_smoke_trains_on_converted_data(tmp_path, tiny_model):
    env = cli_env(VLMR_HOME=str(tmp_path))
    csv = _fer2013_csv(tmp_path / "fer2013.csv", ["Training"] * 70 + ["PublicTest"] * 3 + ["PrivateTest"] * 3)
    for split in ("train", "validation"):
        run_cli(["vlmr", "convert", "fer2013", "--input", str(csv), "--split", split], env=env, cwd=tmp_path)
    model = tiny_model("qwen3_vl")
    out = tmp_path / "smoke"
    proc = run_cli(["vlmr", "smoke", str(RECIPE), "--train-only", "--out", str(out), f"model_name_or_path={model}"],
                   env=env, cwd=tmp_path, timeout=600)
    summary = json.loads(proc.stdout[proc.stdout.index("{"): proc.stdout.rindex("}") + 1])
    # the user's records, not the demo twins; only as many as 2 steps of 16 x 2 use
    assert summary["data"] == {"fer2013_train": "fer2013_train", "fer2013_validation": "fer2013_validation"}
    assert summary["tiny_model"] == str(model)
    assert "smoke data: fer2013_train, fer2013_validation" in proc.stderr
    # the command, printed before it ran, is the one LLaMA-Factory was given (train.log's first line)
    shown = next(line for line in proc.stderr.splitlines() if line.startswith("$ ") and " train " in line)
    logged = (out / "train.log").read_text().splitlines()[0]
    assert shown.endswith(logged) and f"model_name_or_path={model}" in shlex.split(logged)
    assert "dataset=fer2013_train" in logged and "max_samples=64" in logged
    # progress from LLaMA-Factory's trainer_log.jsonl (a line per tenth when stderr is not a terminal)
    assert "qwen3_vl_4b_lora: 2/2 steps (100%), loss " in proc.stderr
    # held-out loss on the converted validation split, and the best checkpoint reloaded at the end
    state = json.loads((out / "train" / "trainer_state.json").read_text())
    assert any("eval_loss" in entry for entry in state["log_history"])
    assert state["best_model_checkpoint"] == str(out / "train" / "checkpoint-2")
    # TensorBoard (the recipe's report_to) wrote the training loss of both steps
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    [run] = (out / "train" / "runs").iterdir()
    events = EventAccumulator(str(run))
    events.Reload()
    assert [scalar.step for scalar in events.Scalars("train/loss")] == [1, 2]
    assert "eval/loss" in events.Tags()["scalars"]
