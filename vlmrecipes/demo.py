"""`vlmr demo`: the whole loop on the CPU in a few minutes: data -> model -> train -> held-out accuracy.

1. generates the synthetic `demo_shapes` dataset (train/test, see `vlmr demo-data`);
2. builds the tiny Qwen2.5-VL twin (the real architecture class, random weights);
3. predicts the held-out split with `llamafactory-cli train` (do_predict) -> accuracy before training;
4. fully fine-tunes it with `llamafactory-cli train` (SFT, ~a few minutes on 2 cores);
5. predicts again -> accuracy after. Chance is 1/3 (three shape colours, three background colours).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from vlmrecipes.demo_data import generate
from vlmrecipes.paths import DATASET_DIR, HOME
from vlmrecipes.smoke import llamafactory, tiny_model

# Full fine-tuning of every module (vision tower too): the random-weight tower must learn to see shapes.
TRAIN_ARGS = {
    "stage": "sft", "do_train": True, "finetuning_type": "full", "freeze_vision_tower": False,
    "dataset": "demo_shapes_train", "template": "qwen2_vl", "cutoff_len": 256,
    "per_device_train_batch_size": 8, "learning_rate": 1.0e-3, "num_train_epochs": 3,
    "lr_scheduler_type": "cosine", "warmup_ratio": 0.05, "logging_steps": 10, "save_strategy": "no",
}
PREDICT_ARGS = {
    "stage": "sft", "do_predict": True, "predict_with_generate": True, "finetuning_type": "full",
    "eval_dataset": "demo_shapes_test", "template": "qwen2_vl", "cutoff_len": 256,
    "per_device_eval_batch_size": 16, "max_new_tokens": 8, "do_sample": False,
}
COMMON = {"dataset_dir": str(DATASET_DIR), "overwrite_output_dir": True, "overwrite_cache": True,
          "preprocessing_num_workers": 1, "dataloader_num_workers": 0, "report_to": "none", "seed": 42}


def accuracy(predictions: Path) -> float:
    """Exact match (VQA-normalised) of LLaMA-Factory's generated_predictions.jsonl, as `vlmr eval` scores it."""
    from vlmrecipes.eval.data import load_predictions
    from vlmrecipes.eval.metrics import exact_match, mean

    return mean(exact_match(row["predict"], row["label"]) for row in load_predictions(predictions))


def _run(command_args: dict, out: Path, name: str) -> float:
    """`llamafactory-cli train` on `command_args` written as `<name>.yaml`; its log in `<name>.log`, its progress
    (LLaMA-Factory's trainer_log.jsonl) shown while it runs."""
    config = out / f"{name}.yaml"
    config.write_text(yaml.safe_dump(command_args, sort_keys=False))
    return llamafactory("train", config, {}, out / f"{name}.log", progress=Path(command_args["output_dir"]))


def demo(out: Path, epochs: int = TRAIN_ARGS["num_train_epochs"]) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    generate("demo_shapes", DATASET_DIR)
    base = tiny_model("qwen2_5_vl_demo")
    result = {"model": str(base), "chance": 1 / 3}

    _run({**PREDICT_ARGS, **COMMON, "model_name_or_path": str(base), "output_dir": str(out / "before")},
         out, "predict_before")
    result["accuracy_before"] = accuracy(out / "before" / "generated_predictions.jsonl")
    print(f"held-out accuracy before training: {result['accuracy_before']:.1%}", flush=True)

    start = time.time()
    _run({**TRAIN_ARGS, **COMMON, "num_train_epochs": epochs, "model_name_or_path": str(base),
          "output_dir": str(out / "model")}, out, "train")
    result["train_seconds"] = round(time.time() - start, 1)
    print(f"trained in {result['train_seconds']} s -> {out / 'model'}", flush=True)

    _run({**PREDICT_ARGS, **COMMON, "model_name_or_path": str(out / "model"), "output_dir": str(out / "after")},
         out, "predict_after")
    result["accuracy_after"] = accuracy(out / "after" / "generated_predictions.jsonl")
    print(f"held-out accuracy after training:  {result['accuracy_after']:.1%} (chance {1 / 3:.1%})")
    (out / "result.json").write_text(json.dumps(result, indent=2))
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=HOME / "outputs" / "demo")
    parser.add_argument("--epochs", type=float, default=TRAIN_ARGS["num_train_epochs"])


def run(args: argparse.Namespace) -> int:
    result = demo(args.out.resolve(), args.epochs)
    print(json.dumps(result, indent=2))
    return 0 if result["accuracy_after"] > result["accuracy_before"] else 1
