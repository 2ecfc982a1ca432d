"""GPU harness: train each recipe for ~20 steps at real size on this machine's GPU, as written and with
LLaMA-Factory's defaults, and measure speed and memory next to the planner's prediction.

    python benchmarks/gpu/run.py --recipes recipes/medct_lora.yaml recipes/emotion_lora.yaml --out gpu_results
    bash benchmarks/gpu/run_offline.sh --recipes ...     # the same on a machine with no network (README)
    python benchmarks/gpu/run.py --tiny --device cpu --steps 3 --warmup 1 --recipes recipes/medct_lora.yaml
                                                     # the same code path on the recipe's tiny twin, on the CPU

For each recipe (default: every training recipe), with nothing downloaded:
1. model: a random-weight checkpoint at real size, made on the device from the stored config (`synth.py`
   says how, the tokenizer included); `--tiny`: the recipe's tiny twin (`vlmr tiny`) instead;
2. data: synthetic ShareGPT records shaped like our converters' output of each of the recipe's datasets
   (`synth.DATASET_SHAPES`), enough for `--steps` optimizer steps, in a dataset_info.json of their own;
3. runs, each `llamafactory-cli train`'s code path in a fresh process (`probe_train.py`, through torchrun when
   the run uses DeepSpeed):
   - `recipe`: the recipe file with only these overrides: model_name_or_path, dataset, dataset_dir,
     output_dir, max_steps, save_strategy=no, report_to=none, overwrite_output_dir, no held-out evaluation
     (eval_strategy=no, eval_dataset=null, val_size=0, load_best_model_at_end=false), logging_steps=1 (the loss
     of every step; its .item() costs nothing more, the probe synchronizes at each step end anyway), plus
     `--set` ones if given and, with --device cpu, the switches `vlmr smoke` turns off on a CPU (bf16,
     flash_attn, Liger, DeepSpeed, worker counts);
   - `lf_defaults`: a recipe that keeps only `LF_DEFAULTS_KEEP` from ours (what is trained, on which data
     and template, batch geometry, learning rate and precision) and leaves every other argument at
     LLaMA-Factory 0.9.5's default: attention `flash_attn: auto` (SDPA where available), gradient
     checkpointing LLaMA-Factory's own default (on, re-entrant), image_max_pixels 768*768, image_min_pixels
     32*32, cutoff_len 2048, no DeepSpeed, no Liger, preprocessing and loader workers at their defaults.
     Precision is kept because LLaMA-Factory's default is fp32, which nobody trains a 3-8B VLM in.
4. per run (`--steps` steps, timed after the first `--warmup`):
   - attention: `_attn_implementation` of the language model and of the vision tower as loaded;
   - s/step: mean wall time of the optimizer steps after the warm-up ones;
   - tokens/s per GPU: non-padding tokens per optimizer step (samples per step x mean tokenized length of the
     train set as LLaMA-Factory tokenized it, image tokens included) / s/step / GPUs;
   - MFU = model FLOPs per step / s/step / (GPUs x peak dense bf16 FLOP/s of the card), with
     model FLOPs per step = 6 x N_lm x T_lm + 6 x N_vis x T_vis:
       N_lm  parameters of the language model less its input embeddings (a lookup), lm_head and LoRA included;
       T_lm  language-model tokens per step (as above);
       N_vis parameters of the vision tower and projector; T_vis the patches it runs on per step (image tokens
             x spatial_merge_size^2 for Qwen, one per image token for a SigLIP/LLaVA tower).
     6 = 2 (forward) + 4 (backward) FLOPs per parameter per token, counted for frozen and LoRA-wrapped weights
     too (the usual MFU convention: the backward pass of a frozen weight skips its weight-gradient third and
     gradient checkpointing recomputes the forward pass; neither is counted). Attention-score FLOPs
     (12 x layers x hidden x sequence per token) are left out: under 10% of the total at these lengths.
     Peak: `PEAK_BF16_TFLOPS` by the name torch.cuda.get_device_name() gives (H100 SXM: 989 TFLOP/s);
   - peak memory: torch.cuda.max_memory_allocated() and max_memory_reserved() of the training process;
   - planner: `vlmr plan`'s predicted max_memory_allocated for the run's arguments, at the recipe's cutoff_len
     (as written) and at the longest sample measured here.
Results: results.json and results.md in --out; each run's log beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# recipes name their DeepSpeed configs and earlier stages' outputs relative to the checkout, also when the
# package is installed as a wheel (run_offline.sh)
os.environ.setdefault("VLMR_HOME", str(REPO))
sys.path.insert(0, str(HERE))
import synth  # noqa: E402  (benchmarks/gpu is not a package)

from vlmrecipes import plan as planner  # noqa: E402
from vlmrecipes import recipes, smoke  # noqa: E402

GIB = 1024 ** 3
# Dense bf16 tensor-core peak, TFLOP/s, by a substring of torch.cuda.get_device_name() (first match wins).
PEAK_BF16_TFLOPS = {
    "H100 PCIe": 756, "H100 NVL": 835, "H100": 989, "H200": 989, "GH200": 989, "H800": 989, "H20": 148,
    "B200": 2250, "A100": 312, "A800": 312, "L40S": 362, "L40": 181, "A10G": 70, "RTX 4090": 165,
}
# What the lf_defaults run keeps from the recipe (see the module docstring)
LF_DEFAULTS_KEEP = (
    "model_name_or_path", "trust_remote_code", "stage", "do_train", "finetuning_type", "lora_rank", "lora_alpha",
    "lora_dropout", "lora_target", "additional_target", "freeze_vision_tower", "freeze_multi_modal_projector",
    "freeze_language_model", "freeze_trainable_layers", "freeze_trainable_modules", "freeze_extra_modules",
    "train_mm_proj_only", "template", "enable_thinking", "dataset", "dataset_dir", "per_device_train_batch_size",
    "gradient_accumulation_steps", "learning_rate", "bf16", "fp16",
)
MODES = ("recipe", "lf_defaults")


def peak_tflops(device_name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in device_name), None)


def lf_defaults_recipe(recipe: dict) -> dict:
    return {key: recipe[key] for key in LF_DEFAULTS_KEEP if key in recipe}


def run_overrides(model: Path, data: Path, datasets: list[str], output: Path, steps: int, device: str) -> dict:
    overrides = {"model_name_or_path": str(model), "dataset": ",".join(datasets), "dataset_dir": str(data),
                 "output_dir": str(output), "max_steps": str(steps), "save_strategy": "'no'",  # quoted: YAML no=false
                 "report_to": "none", "overwrite_output_dir": "true", "logging_steps": "1",
                 # no held-out evaluation: it is not what is timed, and its data is not synthesised
                 "eval_strategy": "'no'", "eval_dataset": "null", "val_size": "0", "load_best_model_at_end": "false"}
    if device == "cpu":
        overrides = {**smoke.CPU_OVERRIDES, **overrides}
    return overrides


def child_env(device: str) -> dict[str, str]:
    """`vlmr smoke`'s environment (offline, our interpreter's bin first) with the GPU visible unless --device cpu."""
    env = smoke.cli_env()
    env["CUDA_VISIBLE_DEVICES"] = "" if device == "cpu" else os.environ.get("CUDA_VISIBLE_DEVICES", "0")
    return env


def launch(recipe_file: Path, overrides: dict, log: Path, probe: Path, device: str, deepspeed: bool,
           timeout: float) -> int:
    """Run probe_train.py (through torchrun for DeepSpeed, as `llamafactory-cli` does); returns the exit code."""
    script = [str(HERE / "probe_train.py"), str(recipe_file), *[f"{k}={v}" for k, v in overrides.items()]]
    if deepspeed:
        args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1",
                "--master_port", str(smoke.free_port()), *script]
    else:
        args = [sys.executable, *script]
    env = child_env(device)
    env.update(VLMR_PROBE_OUT=str(probe), HF_DATASETS_CACHE=str(log.parent / "hf_datasets_cache"))
    with open(log, "w") as f:
        f.write(" ".join(args) + "\n")
        f.flush()
        try:
            return subprocess.run(args, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            f.write(f"\n[harness] killed after {timeout:.0f} s\n")
            return -9


def failure_reason(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if "OutOfMemoryError" in line or "CUDA out of memory" in line:
            return "out of GPU memory"
    errors = [line for line in lines if "Error" in line or "error:" in line]
    return (errors or lines or ["no output"])[-1][:300]


def metrics(probe: dict, steps: int, warmup: int) -> dict:
    """Timing, throughput and MFU from what probe_train.py recorded."""
    ends = probe["step_end_seconds"]
    if len(ends) < steps or warmup < 1 or warmup >= steps:
        raise ValueError(f"{len(ends)} steps recorded; need --steps ({steps}) > --warmup ({warmup}) >= 1")
    seconds_per_step = (ends[steps - 1] - ends[warmup - 1]) / (steps - warmup)
    lengths, image_tokens = probe["sample_tokens"], probe["sample_image_tokens"]
    mean_tokens = sum(lengths) / len(lengths)
    mean_patches = sum(image_tokens) / len(image_tokens) * probe["vision_merge"]
    samples = probe["samples_per_step"]
    params = probe["parameters"]
    flops = 6 * params["language"] * samples * mean_tokens + 6 * params["vision"] * samples * mean_patches
    world = probe["world_size"]
    peak = peak_tflops(probe["device"])
    return {
        "seconds_per_step": seconds_per_step,
        "tokens_per_step": samples * mean_tokens,
        "tokens_per_second_per_gpu": samples * mean_tokens / seconds_per_step / world,
        "model_tflops_per_step": flops / 1e12,
        "peak_tflops": peak,
        "mfu": flops / seconds_per_step / (world * peak * 1e12) if peak else None,
        "mean_sample_tokens": mean_tokens,
        "max_sample_tokens": max(lengths),
        "image_tokens_per_sample": sum(image_tokens) / len(image_tokens),
        "vision_patches_per_sample": mean_patches,
    }


def planner_prediction(recipe_file: Path, max_tokens: int, extra: dict) -> dict:
    """`vlmr plan`'s predicted max_memory_allocated (GiB) for this run's arguments (`extra`: --set), one process."""
    out = {}
    for label, overrides in (("at_cutoff_len", extra), ("at_measured_length", {**extra, "cutoff_len": max_tokens})):
        try:
            out[label] = planner.plan(recipe_file, nproc=1, overrides=overrides).allocated() / GIB
        except Exception as error:  # the planner cannot model every run; say why instead of failing the row
            out[label] = None
            out[f"{label}_error"] = f"{type(error).__name__}: {error}"
    return out


def display_path(path: Path) -> str:
    return str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)


def measure_run(recipe_path: Path, mode: str, ckpt: Path, data: Path, datasets: list[str], out: Path,
                args: argparse.Namespace) -> dict:
    recipe = recipes.load(recipe_path)
    run_dir = out / f"{recipe_path.stem}-{mode}"
    run_dir.mkdir(parents=True, exist_ok=True)
    if mode == "recipe":
        recipe_file = recipe_path
    else:
        recipe_file = run_dir / "lf_defaults.yaml"
        recipe_file.write_text(yaml.safe_dump(lf_defaults_recipe(recipe), sort_keys=False))
    overrides = {**run_overrides(ckpt, data, datasets, run_dir / "output", args.steps, args.device),
                 **{key: str(value) for key, value in args.set.items()}}
    deepspeed = mode == "recipe" and bool(recipe.get("deepspeed")) and args.device != "cpu"
    probe_path, log = run_dir / "probe.json", run_dir / "train.log"
    start = time.time()
    code = launch(recipe_file, overrides, log, probe_path, args.device, deepspeed, args.timeout)
    row = {"recipe": display_path(recipe_path),
           "mode": mode, "recipe_file": str(recipe_file), "overrides": overrides, "log": str(log),
           "wall_seconds": time.time() - start, "exit_code": code}
    if code != 0 or not probe_path.exists():
        row["status"] = f"failed: {failure_reason(log)}"
        return row
    probe = json.loads(probe_path.read_text())
    row.update(status="ok", device=probe["device"], attention=probe["attention"], parameters=probe["parameters"],
               losses=probe["losses"], peak_allocated_gib=probe.get("peak_allocated_bytes", 0) / GIB or None,
               peak_reserved_gib=probe.get("peak_reserved_bytes", 0) / GIB or None,
               peak_rss_gib=probe.get("peak_rss_bytes", 0) / GIB or None)
    row.update(metrics(probe, args.steps, args.warmup))
    row["planner_allocated_gib"] = planner_prediction(recipe_file, row["max_sample_tokens"], args.set)
    return row


def prepare_model(recipe_path: Path, cache: Path, args: argparse.Namespace) -> Path:
    """The tiny twin (--tiny), or the real-size checkpoint built by synth.py in a child process (its GPU memory
    is returned before training starts; its output goes to CHECKPOINT.log)."""
    if args.tiny:
        return smoke.tiny_model(recipes.tiny_kind(recipes.load(recipe_path), recipe_path))
    ckpt = cache / synth.model_key(recipe_path, tiny=False)
    if not (ckpt / "harness_checkpoint.json").exists():
        cache.mkdir(parents=True, exist_ok=True)
        with open(ckpt.with_suffix(".log"), "w") as log:
            code = subprocess.run([sys.executable, str(HERE / "synth.py"), "checkpoint", str(recipe_path), str(ckpt),
                                   "--device", args.device], cwd=REPO, env=child_env(args.device), stdout=log,
                                  stderr=subprocess.STDOUT).returncode
        if code != 0:
            raise RuntimeError(f"building the checkpoint failed: {failure_reason(ckpt.with_suffix('.log'))}")
    return ckpt


def bench_recipe(recipe_path: Path, args: argparse.Namespace, last_use: bool) -> list[dict]:
    """Both runs of one recipe; `last_use`: no later recipe trains the same model, its checkpoint can go."""
    from transformers import AutoTokenizer

    recipe = recipes.load(recipe_path)
    try:
        ckpt = prepare_model(recipe_path, args.out / "checkpoints", args)
    except RuntimeError as error:  # a model that cannot be built (out of memory, say) is a result too
        rows = [{"recipe": display_path(recipe_path), "mode": mode, "status": f"failed: {error}"}
                for mode in args.modes]
        for row in rows:
            print(table_line(row), flush=True)
        return rows
    # enough samples for every step (plus one step's worth: LLaMA-Factory drops no last batch, but be safe)
    geometry = {**recipe, **args.set}
    samples = geometry.get("per_device_train_batch_size", 1) * geometry.get("gradient_accumulation_steps", 1) * (
        args.steps + 1)
    data = args.out / "data" / recipe_path.stem
    shapes = synth.synthesize_data(recipe_path, AutoTokenizer.from_pretrained(ckpt), data, samples)
    rows = []
    for mode in args.modes:
        row = measure_run(recipe_path, mode, ckpt, data, list(shapes), args.out, args)
        row["model"] = str(ckpt)
        row["data_shapes"] = shapes
        rows.append(row)
        print(table_line(row), flush=True)
    if last_use and not args.tiny and not args.keep_checkpoints:
        shutil.rmtree(ckpt)  # 8-18 GB each: three models fill a 64 GB disk
    return rows


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


TABLE_HEADER = ("| recipe | run | attention (LM / vision) | s/step | tokens/s/GPU | MFU | peak alloc GiB "
                "| peak reserved GiB | planner GiB (cutoff / measured len) | status |\n"
                "|---|---|---|---|---|---|---|---|---|---|")


def table_line(row: dict) -> str:
    if row["status"] != "ok":
        return f"| {row['recipe']} | {row['mode']} | | | | | | | | {row['status']} |"
    attention = row["attention"]
    lm = attention.get("text_config") or attention.get("thinker_config.text_config") or attention["model"]
    vision = attention.get("vision_config") or attention.get("thinker_config.vision_config") or "-"
    plan = row["planner_allocated_gib"]
    return (f"| {row['recipe']} | {row['mode']} | {lm} / {vision} | {row['seconds_per_step']:.3f} "
            f"| {row['tokens_per_second_per_gpu']:.0f} | {_fmt(row['mfu'], '.1%')} "
            f"| {_fmt(row['peak_allocated_gib'], '.1f')} | {_fmt(row['peak_reserved_gib'], '.1f')} "
            f"| {_fmt(plan.get('at_cutoff_len'), '.1f')} / {_fmt(plan.get('at_measured_length'), '.1f')} | ok |")


def environment() -> dict:
    import importlib.metadata

    import torch

    versions = {}
    for dist in ("torch", "transformers", "peft", "accelerate", "datasets", "deepspeed", "llamafactory", "vlm-recipes"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return {"device": device, "peak_bf16_tflops": peak_tflops(device), "python": platform.python_version(),
            "versions": versions}


def write_report(rows: list[dict], args: argparse.Namespace) -> None:
    env = environment()
    result = {"environment": env, "steps": args.steps, "warmup": args.warmup, "tiny": args.tiny, "runs": rows}
    (args.out / "results.json").write_text(json.dumps(result, indent=2, default=str))
    what = "tiny twins (not real size)" if args.tiny else "real-size random-weight models"
    lines = [f"# GPU harness: {env['device']}", "",
             f"{what}, synthetic data; {args.steps} steps, timed after {args.warmup}; "
             f"peak dense bf16 {_fmt(env['peak_bf16_tflops'], '.0f', 'unknown')} TFLOP/s; "
             + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v), "", TABLE_HEADER,
             *[table_line(row) for row in rows], ""]
    (args.out / "results.md").write_text("\n".join(lines))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", type=Path, help="training recipes (default: all of recipes/)")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per run (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the timing (default 5)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="runs per recipe")
    parser.add_argument("--out", type=Path, default=REPO / "gpu_results", help="results folder")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tiny", action="store_true", help="the recipes' tiny twins instead of real-size models")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep the real-size checkpoints in OUT/checkpoints (default: deleted after last use)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="extra LLaMA-Factory overrides for every run (e.g. per_device_train_batch_size=1); "
                             "recorded in results.json, and the runs no longer are the recipe as written")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run before it is killed")
    args = parser.parse_args(argv)
    if not 1 <= args.warmup < args.steps:
        parser.error("need 1 <= --warmup < --steps")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA device is visible here; `--tiny --device cpu` runs the same code path on the CPU")
    try:
        args.set = planner.parse_overrides(args.set)
    except ValueError as error:
        parser.error(str(error))
    args.recipes = [p.resolve() for p in (args.recipes or recipes.training_recipes(REPO / "recipes"))]
    args.out = args.out.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    print(TABLE_HEADER, flush=True)
    rows = []
    keys = [synth.model_key(path, args.tiny) for path in args.recipes]
    for i, recipe_path in enumerate(args.recipes):
        rows.extend(bench_recipe(recipe_path, args, last_use=keys[i] not in keys[i + 1:]))
        write_report(rows, args)  # after each recipe: a run cut short keeps what it measured
    print(f"results: {args.out / 'results.md'} and {args.out / 'results.json'}")
    return 0 if all(row["status"] == "ok" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
