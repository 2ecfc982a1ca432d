"""`vlmr smoke RECIPE [key=value ...]`: prove a recipe runs, on the CPU, before spending GPU hours on it.

Runs the real `llamafactory-cli train RECIPE` for a few steps with the recipe's own settings, except:
- the model: the tiny random-weight twin of the recipe's family (chosen by its template, see `vlmr tiny`);
- the data (`--data`): `own` trains on the first records of the datasets you converted (`vlmr convert`), `demo` on
  each dataset's bundled demo twin (`datasets.demo_twin`, see `vlmr demo-data`); `auto` (the default) takes yours
  where a dataset is registered with records, and its demo twin otherwise, so smoke works before and after
  `vlmr convert`. Only as many records as the steps use are read (`max_samples`);
- the length: `max_steps`;
- GPU-only switches that cannot run on a CPU (`recipes.CPU_SWITCHES`): bf16/fp16, flash attention, Liger kernels,
  and DeepSpeed in a single process. With `--nproc 2` or more the recipe's own `deepspeed` config is kept (or
  `--deepspeed` given), and DeepSpeed runs its ZeRO stage over gloo on the CPU ranks;
- trackers: TensorBoard is kept (its event files land in the smoke's output), remote ones (W&B, ...) are off.
Your own `key=value` arguments come last and win over all of these (`model_name_or_path=/path` smokes a local
model). Everything goes through LLaMA-Factory's own `key=value` CLI overrides; the recipe file is not edited, and
each command is printed before it runs, ready to copy.
After training it checks what the log alone cannot show: the steps ran, every logged loss is finite, the weights
were saved, and under DeepSpeed the checkpoint holds one ZeRO shard per rank. Then it runs the recipe's
companions `<name>_predict.yaml` and `<name>_export.yaml` the same way and reloads the exported model with plain
transformers to generate from a demo image.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from vlmrecipes import recipes
from vlmrecipes.data_converters import datasets
from vlmrecipes.paths import DATASET_DIR, HOME
from vlmrecipes.progress import watch

CACHE = HOME / ".cache"
# The CPU switches, and what keeps a smoke run small and self-contained.
CPU_OVERRIDES = {
    **recipes.CPU_SWITCHES,
    "preprocessing_num_workers": "1",
    "dataloader_num_workers": "0",
    "overwrite_cache": "true",
    "ddp_timeout": "600",
}
LOCAL_TRACKERS = {"tensorboard"}  # written to the output folder; the others need an account and the network


def tiny_model(kind: str, cache: Path = CACHE) -> Path:
    """The cached tiny twin of `kind` (built on first use)."""
    from vlmrecipes.tiny import build_tiny

    out = cache / "tiny" / f"{kind}-seed0"
    if not (out / ".complete").exists():
        build_tiny(kind, out, seed=0)
        (out / ".complete").write_text("ok")
    return out


def ensure_demo_data(names: list[str], dataset_dir: Path = DATASET_DIR) -> None:
    from vlmrecipes.demo_data import DEMO_DATASETS, generate

    for name in {n.rsplit("_", 1)[0] for n in names}:
        if name in DEMO_DATASETS and not (dataset_dir / name / "test.jsonl").exists():
            generate(name, dataset_dir)


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", DISABLE_VERSION_CHECK="1", WANDB_DISABLED="true",
               TOKENIZERS_PARALLELISM="false")
    env.setdefault("CUDA_VISIBLE_DEVICES", "")  # the point is to prove the recipe on a machine without a GPU
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env


def llamafactory(command: str, recipe: Path, overrides: dict[str, str], log: Path, nproc: int = 1,
                 progress: Path | None = None) -> float:
    """Run `llamafactory-cli COMMAND RECIPE k=v ...`; raise with the log's tail on failure. Returns seconds.

    The command is printed first (stderr), ready to copy; its output goes to `log`. `progress`: the run's
    output_dir, whose trainer_log.jsonl is followed for a progress bar (vlmrecipes.progress).
    nproc > 1 makes LLaMA-Factory launch itself through torchrun (FORCE_TORCHRUN), one CPU process per rank.
    """
    # This interpreter's LLaMA-Factory: its script when it has one, else the module (a venv that layers another's
    # packages has no script of its own, and the one on PATH may belong to another install).
    exe = Path(sys.executable).parent / "llamafactory-cli"
    args = [str(exe)] if exe.exists() else [sys.executable, "-m", "llamafactory.cli"]
    args += [command, str(recipe)]
    args += [f"{k}={v}" for k, v in overrides.items()]
    env = cli_env()
    launch = {"CUDA_VISIBLE_DEVICES": env["CUDA_VISIBLE_DEVICES"]}
    if nproc > 1:
        launch.update(FORCE_TORCHRUN="1", NPROC_PER_NODE=str(nproc), MASTER_PORT=str(free_port()))
    env.update(launch)
    shown = " ".join(f"{k}={shlex.quote(v)}" for k, v in launch.items()) + " " + shlex.join(args)
    print(f"$ cd {shlex.quote(str(HOME))} && {shown}", file=sys.stderr, flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(log, "w") as f:
        f.write(shown + "\n")
        f.flush()
        proc = subprocess.Popen(args, cwd=HOME, env=env, stdout=f, stderr=subprocess.STDOUT)
        returncode = watch(proc, progress, Path(recipe).stem) if progress else proc.wait()
    if returncode != 0:
        tail = log.read_text()[-4000:]
        raise RuntimeError(f"llamafactory-cli {command} {recipe} failed (exit {returncode}); log: {log}\n{tail}")
    return time.time() - start


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (torchrun's MASTER_PORT, test servers)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SmokeFailure(RuntimeError):
    """Training exited 0 but did not do what a training run must (steps, finite loss, saved weights)."""


def _safetensors(paths) -> dict:
    from safetensors.torch import load_file

    tensors: dict = {}
    for path in paths:
        tensors.update(load_file(path))
    return tensors


def weights_moved(train_out: Path, weights: list[str], base_model: Path) -> bool:
    """Did training change the saved weights? LoRA: a `lora_B` left its zero init; else a tensor differs from base."""
    if "adapter_model.safetensors" in weights:
        adapter = _safetensors([train_out / "adapter_model.safetensors"])
        return any(bool(tensor.any()) for name, tensor in adapter.items() if "lora_B" in name)
    trained = _safetensors(train_out / name for name in weights)
    base = _safetensors(sorted(base_model.glob("model*.safetensors")))
    return any(not trained[name].float().equal(base[name].float()) for name in trained.keys() & base.keys())


def check_training(train_out: Path, steps: int, deepspeed_ranks: int = 0, base_model: Path | None = None) -> dict:
    """Raise SmokeFailure unless `train_out` shows `steps` steps, finite losses and saved weights.

    `base_model` (the model trained from): the saved weights must differ from it, else no gradient reached them.
    `deepspeed_ranks` > 0: the checkpoint saved at the last step must hold DeepSpeed's ZeRO optimizer shard of
    every rank (`checkpoint-<steps>/global_step<steps>/*zero_pp_rank_<r>_mp_rank_00_optim_states.pt`).
    Returns what was found: {"steps", "losses", "weights", "zero_shards"}.
    """
    state_path = train_out / "trainer_state.json"
    if not state_path.exists():
        raise SmokeFailure(f"{state_path} is missing: the trainer did not finish (see train.log)")
    state = json.loads(state_path.read_text())
    if state.get("global_step") != steps:
        raise SmokeFailure(f"{state_path}: global_step is {state.get('global_step')}, expected {steps}: the run "
                           "stopped early or the dataset is too small for the steps asked")
    losses = [entry["loss"] for entry in state.get("log_history", []) if "loss" in entry]
    if not losses:
        raise SmokeFailure(f"{state_path}: no training loss was logged (logging_steps=1 was passed)")
    if not all(math.isfinite(loss) for loss in losses):
        raise SmokeFailure(f"{state_path}: non-finite training loss {losses}: the recipe diverges or its labels "
                           "are all masked (check cutoff_len against the image tokens)")
    weights = sorted(p.name for p in train_out.glob("*.safetensors")
                     if p.name == "adapter_model.safetensors" or p.name.startswith("model"))
    if not weights:
        raise SmokeFailure(f"{train_out}: no adapter_model.safetensors or model*.safetensors: "
                           "the weights were not saved")
    if base_model is not None and not weights_moved(train_out, weights, base_model):
        raise SmokeFailure(f"{train_out}: {', '.join(weights)} equal the weights of {base_model}: no gradient reached "
                           "the trainable parameters (check the freeze flags, lora_target and learning rate)")
    found = {"steps": steps, "losses": losses, "weights": weights, "zero_shards": []}
    if deepspeed_ranks:
        step_dir = train_out / f"checkpoint-{steps}" / f"global_step{steps}"
        shards = sorted(p.name for p in step_dir.glob("*zero_pp_rank_*_mp_rank_00_optim_states.pt"))
        expected = [f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt" for rank in range(deepspeed_ranks)]
        if [name.removeprefix("bf16_") for name in shards] != expected:
            raise SmokeFailure(f"{step_dir}: DeepSpeed ZeRO optimizer shards {shards or 'none'}, expected one per "
                               f"rank: {expected}")
        found["zero_shards"] = shards
    return found


def _datasets(value) -> list[str]:
    return [d.strip() for d in str(value).split(",") if d.strip()]


def logged_deepspeed_config(config: str | Path, out: Path) -> Path:
    """`config` with DeepSpeed's own INFO log on (its default is WARNING), written to `out/deepspeed.json`.

    Nothing else changes: train.log then shows DeepSpeed's engine lines ("Creating ... ZeRO stage 3 optimizer").
    """
    path = Path(config) if Path(config).is_absolute() else HOME / config
    values = json.loads(path.read_text())
    values.setdefault("log_level", "info")
    out.mkdir(parents=True, exist_ok=True)
    logged = out / "deepspeed.json"
    logged.write_text(json.dumps(values, indent=2))
    return logged


DATA_CHOICES = ("auto", "own", "demo")


def has_records(name: str, dataset_dir: Path = DATASET_DIR) -> bool:
    """Is `name` registered in `dataset_dir` with a file that holds at least one record?"""
    try:
        found = datasets.resolve(name, dataset_dir)
    except datasets.DatasetError:
        return False
    return next(datasets.iter_rows(found.path), None) is not None


def pick_data(names: list[str], data: str, split: str = "train", dataset_dir: Path = DATASET_DIR) -> dict[str, str]:
    """Each dataset name -> what a smoke run reads for it: the name itself (your converted data) or its demo twin.

    `data`: "own" (yours, an error when a dataset is not converted), "demo" (the twins), "auto" (yours where it has
    records, else the twin). `split` other than "train" picks the twins' test split (evaluation data).
    """
    if data not in DATA_CHOICES:
        raise ValueError(f"data must be one of {', '.join(DATA_CHOICES)}, not {data!r}")
    picked = {}
    for name in names:
        own = data != "demo" and has_records(name, dataset_dir)
        if data == "own" and not own:
            raise datasets.DatasetError(f"dataset {name!r}", f"not registered with records in {dataset_dir}",
                                        "convert it first (`vlmr convert`, the recipe's header says how), or smoke "
                                        "on its demo twin (`--data demo`)")
        picked[name] = name if own else datasets.demo_twin(name, split)
    return picked


def _describe(picked: dict[str, str]) -> str:
    return ", ".join(name if name == used else f"{name} -> {used} (demo twin)" for name, used in picked.items())


def smoke(recipe_path: Path, out: Path, steps: int = 2, samples: int = 4, nproc: int = 1,
          deepspeed: str | None = None, train_only: bool = False, data: str = "auto",
          overrides: list[str] | None = None) -> dict:
    """Train, predict and export `recipe_path` on its tiny twin; returns a summary (paths and seconds).

    `data`: whose records to train on (`pick_data`). `overrides`: the user's `key=value` arguments, applied to the
    training command after smoke's own (so they win). `nproc` ranks train through torchrun on the CPU: through the
    DeepSpeed engine with `deepspeed` (a config path) or else the recipe's own `deepspeed` config, otherwise DDP
    over gloo (the CPU backend).
    """
    recipe_path = Path(recipe_path).resolve()
    user = recipes.parse_overrides(overrides or [])
    recipe = recipes.load(recipe_path, user)
    if recipes.kind(recipe) != "train":
        raise ValueError(f"{recipe_path} is a {recipes.kind(recipe)} recipe; smoke its training recipe instead")
    train_data = pick_data(_datasets(recipe["dataset"]), data)
    eval_data = pick_data(_datasets(recipe["eval_dataset"]), data, "test") if "eval_dataset" in recipe else {}
    model = Path(user["model_name_or_path"]) if "model_name_or_path" in user else \
        tiny_model(recipes.tiny_kind(recipe, recipe_path))
    ensure_demo_data([*train_data.values(), *eval_data.values()])
    print(f"smoke data: {_describe({**train_data, **eval_data})}", file=sys.stderr)
    lora = recipe.get("finetuning_type", "lora") == "lora"
    summary: dict = {"recipe": str(recipe_path), "tiny_model": str(model), "deepspeed": None, "seconds": {},
                     "data": {**train_data, **eval_data}}

    train_out = out / "train"
    # only the records the steps use, from each dataset: preprocessing a whole converted dataset would take hours
    records = steps * nproc * int(recipe.get("per_device_train_batch_size", 1)) * \
        int(recipe.get("gradient_accumulation_steps", 1))
    tracker = "tensorboard" if "tensorboard" in str(recipe.get("report_to")) else "none"
    train = {**CPU_OVERRIDES, "model_name_or_path": str(model), "dataset": ",".join(train_data.values()),
             "dataset_dir": str(DATASET_DIR), "output_dir": str(train_out), "max_steps": str(steps),
             "max_samples": str(records), "logging_steps": "1", "overwrite_output_dir": "true", "report_to": tracker}
    if eval_data:
        train["eval_dataset"] = ",".join(eval_data.values())
    if recipe.get("eval_strategy", "no") != "no":  # evaluate and save at the last step (load_best_model_at_end)
        train.update(eval_steps=str(steps), save_steps=str(steps))
    if nproc > 1:
        deepspeed = deepspeed or recipe.get("deepspeed")
        summary["deepspeed"] = deepspeed
        # a checkpoint at the last step: DeepSpeed writes each rank's ZeRO shard there
        train.update({"deepspeed": str(logged_deepspeed_config(deepspeed, out)), "save_strategy": "steps",
                      "save_steps": str(steps)} if deepspeed else {"ddp_backend": "gloo"})
    elif deepspeed:
        raise ValueError("--deepspeed needs --nproc 2 or more: DeepSpeed runs under a distributed launcher")
    train.update(pair.split("=", 1) for pair in overrides or [])  # yours, verbatim (checked by parse_overrides)
    summary["seconds"]["train"] = llamafactory("train", recipe_path, train, out / "train.log", nproc, train_out)
    summary["train_output"] = str(train_out)
    summary["checks"] = check_training(train_out, steps, nproc if summary["deepspeed"] else 0, model)
    if train_only:
        return summary
    trained = {"model_name_or_path": str(model), "adapter_name_or_path": str(train_out)} if lora else {
        "model_name_or_path": str(train_out)}

    predict_path = recipes.companion(recipe_path, "predict")
    if predict_path is not None:
        predict = recipes.load(predict_path)
        test_data = pick_data(_datasets(predict["eval_dataset"]), data, "test")
        ensure_demo_data(list(test_data.values()))
        summary["data"].update(test_data)
        settings = {**CPU_OVERRIDES, **trained, "eval_dataset": ",".join(test_data.values()),
                    "dataset_dir": str(DATASET_DIR), "output_dir": str(out / "predict"), "max_samples": str(samples),
                    "max_new_tokens": str(min(int(predict.get("max_new_tokens", 16)), 16)),
                    "overwrite_output_dir": "true"}
        summary["seconds"]["predict"] = llamafactory("train", predict_path, settings, out / "predict.log",
                                                     progress=out / "predict")
        summary["predictions"] = str(out / "predict" / "generated_predictions.jsonl")

    export_path = recipes.companion(recipe_path, "export")
    if export_path is not None:
        settings = {**trained, "export_dir": str(out / "export"), "export_device": "cpu"}
        summary["seconds"]["export"] = llamafactory("export", export_path, settings, out / "export.log")
        summary["export"] = str(out / "export")
        start = time.time()
        summary["reload_generation"] = reload_and_generate(out / "export")
        summary["seconds"]["reload"] = time.time() - start
    return summary


def reload_and_generate(model_dir: Path, max_new_tokens: int = 4) -> str:
    """Load an exported checkpoint with plain transformers and generate from a demo image."""
    import torch
    from PIL import Image
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    config = AutoConfig.from_pretrained(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, config=config).eval()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is the shape?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[Image.new("RGB", (64, 64), (220, 30, 30))], return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new_tokens = output[0, inputs["input_ids"].shape[1]:]
    if new_tokens.numel() == 0:
        raise RuntimeError(f"{model_dir}: the reloaded model generated no token")
    return processor.batch_decode(new_tokens[None], skip_special_tokens=False)[0]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", type=Path, help="a training recipe, e.g. recipes/medct_lora.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="recipe keys for the training run, applied last (e.g. model_name_or_path=/path)")
    parser.add_argument("--data", choices=DATA_CHOICES, default="auto",
                        help="own: the first records of your converted datasets; demo: their bundled demo twins; "
                             "auto (default): yours where converted, else the twin")
    parser.add_argument("--steps", type=int, default=2, help="training steps (default 2)")
    parser.add_argument("--samples", type=int, default=4, help="test samples to predict (default 4)")
    parser.add_argument("--out", type=Path, help="output folder (default outputs/smoke/<recipe name>)")
    parser.add_argument("--nproc", type=int, default=1, help="CPU ranks for training, through torchrun")
    parser.add_argument("--deepspeed", help="with --nproc > 1: a DeepSpeed config instead of the recipe's, e.g. "
                        "recipes/deepspeed/ds_z2_config.json")
    parser.add_argument("--train-only", action="store_true", help="train and check it; skip predict, export, reload")
    parser.parse_args = parser.parse_intermixed_args  # overrides may follow the options, as with llamafactory-cli


def run(args: argparse.Namespace) -> int:
    out = (args.out or HOME / "outputs" / "smoke" / args.recipe.stem).resolve()
    try:
        summary = smoke(args.recipe, out, args.steps, args.samples, args.nproc, args.deepspeed, args.train_only,
                        args.data, args.overrides)
    except (datasets.DatasetError, recipes.RecipeError) as exc:  # nothing ran: a dataset or an override to fix
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SmokeFailure as failure:
        print(f"smoke FAILED: {args.recipe}: {failure}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    done = "" if args.train_only else ", predict, export, reload"
    print(f"smoke OK: {args.recipe} ({args.steps} steps with finite loss, weights saved{done}) -> {out}")
    return 0
