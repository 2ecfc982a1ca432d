"""Task metrics during training (plugins/train_metrics.py): `vlmr_eval_task` makes every evaluation generate
answers on the held-out set and log the task metric to trainer_log.jsonl, the Trainer's log and all_results.json."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers import cli_env, run_cli

# the demo's full fine-tuning on 800 demo_shapes images (1 epoch, 100 steps), evaluated every 25 steps
RUN = {
    "stage": "sft", "do_train": True, "finetuning_type": "full", "freeze_vision_tower": False,
    "dataset": "demo_shapes_train", "eval_dataset": "demo_shapes_test", "template": "qwen2_vl",
    "cutoff_len": 256, "max_samples": 800, "per_device_train_batch_size": 8, "per_device_eval_batch_size": 16,
    "learning_rate": 1.0e-3, "num_train_epochs": 1, "lr_scheduler_type": "cosine", "warmup_ratio": 0.05,
    "logging_steps": 10, "save_strategy": "no", "eval_strategy": "steps", "eval_steps": 25,
    "vlmr_eval_task": "vqa", "vlmr_eval_samples": 32, "vlmr_eval_max_new_tokens": 4,
    "overwrite_output_dir": True, "overwrite_cache": True, "preprocessing_num_workers": 1,
    "dataloader_num_workers": 0, "report_to": "none", "seed": 42,
}
METRIC = "eval_vlmr_vqa_exact_match"


def test_parser_takes_our_keys_and_checks_them():
    from llamafactory.hparams import get_train_args

    base = {k: v for k, v in RUN.items() if not k.startswith("vlmr_eval_")}
    base.update(model_name_or_path="unused", output_dir="unused")
    finetuning_args = get_train_args({**base, "vlmr_eval_task": "medvqa", "vlmr_eval_samples": 8})[3]
    assert finetuning_args.vlmr_eval.task == "medvqa" and finetuning_args.vlmr_eval.samples == 8
    assert finetuning_args.vlmr_eval.eval_datasets == ("demo_shapes_test",)
    assert get_train_args(base)[3].vlmr_eval is None
    with pytest.raises(ValueError, match="'colours' is not a task; choose one of vqa, caption, medvqa"):
        get_train_args({**base, "vlmr_eval_task": "colours"})
    with pytest.raises(ValueError, match="set eval_strategy: steps"):
        get_train_args({**base, "vlmr_eval_task": "vqa", "eval_strategy": "no"})
    with pytest.raises(ValueError, match="unknown key.*vlmr_eval_every"):
        get_train_args({**base, "vlmr_eval_task": "vqa", "vlmr_eval_every": 3})


@pytest.mark.slow
def test_task_metric_is_logged_during_training_and_rises(tmp_path, tiny_model, demo_data):
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({**RUN, "model_name_or_path": str(tiny_model("qwen2_5_vl_demo")),
                                      "dataset_dir": str(demo_data()), "output_dir": str(tmp_path / "out")}))
    # upstream: LLaMA-Factory refuses the key
    upstream = run_cli(["llamafactory-cli", "train", str(config)], check=False, env=cli_env(VLMR_NO_AUTOLOAD="1"))
    assert upstream.returncode != 0 and "vlmr_eval_task" in upstream.stderr

    run_cli(["llamafactory-cli", "train", str(config)])
    out = tmp_path / "out"
    lines = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    curve = [(line["current_steps"], line[METRIC]) for line in lines if METRIC in line]
    assert [step for step, _ in curve] == [25, 50, 75, 100]
    # the random model answers no colour word; after training most answers are right
    assert curve[0][1] < curve[-1][1] and curve[-1][1] >= 0.5, curve
    # what TensorBoard / W&B receive: the Trainer's log history
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert [entry[METRIC] for entry in history if METRIC in entry] == [value for _, value in curve]
    # the run's final results keep the last evaluation
    results = json.loads((out / "all_results.json").read_text())
    assert results[METRIC] == curve[-1][1] and "eval_vlmr_vqa_vqa_accuracy" in results
