"""Reading our recipes: which kind a YAML is, its `key=value` overrides, its companions and its model family.

A recipe lives at `recipes/<task>/<model>_<method>.yaml`, its companions beside it as `<model>_<method>_predict.yaml`
and `<model>_<method>_export.yaml`. The YAML files directly under `recipes/` are the headline aliases (symbolic
links in the checkout and in a `vlmr init` folder): they name a recipe of the collection, they are not recipes of
their own, so listing the collection skips them.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from vlmrecipes.data_converters.datasets import DatasetInfo, load_info
from vlmrecipes.paths import BUNDLED_INFO, BUNDLED_RECIPES, DATASET_DIR, RECIPES_DIR
from vlmrecipes.plugins.architectures import ARCHITECTURES

# The headline entry points (the commands the README opens with) -> the recipe each one names.
HEADLINES = {
    "medct_lora.yaml": "medct/qwen3_vl_8b_thinking_lora.yaml",
    "emotion_lora.yaml": "emotion/qwen2_5_omni_7b_lora.yaml",
}

# LLaMA-Factory template -> the tiny twin of the architecture its recipes train (see `vlmr tiny`).
TEMPLATE_TO_TINY = {template: arch.name for arch in ARCHITECTURES for template in arch.recipe_templates}


# What a recipe written for a GPU needs to run on a CPU: the GPU-only features off (bf16/fp16 mixed precision, the
# FlashAttention-2 kernel, Liger's Triton kernels, DeepSpeed's engine in one process). `vlmr smoke` passes exactly
# these; README "Run any recipe on a local model / on the CPU" lists them for `llamafactory-cli train RECIPE ...`.
CPU_SWITCHES = {
    "bf16": "false",
    "fp16": "false",
    "flash_attn": "auto",
    "enable_liger_kernel": "false",
    "deepspeed": "null",
}


class RecipeError(ValueError):
    """A recipe file or a `key=value` override that LLaMA-Factory would not read; the message names the fix."""


def load(path: str | Path, overrides: dict | None = None) -> dict:
    """The recipe's arguments, with `overrides` (from `parse_overrides`) replacing its keys as
    `llamafactory-cli train RECIPE key=value ...` does."""
    with open(path) as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: not a LLaMA-Factory recipe (expected a YAML mapping of arguments)")
    return {**data, **(overrides or {})}


def parse_overrides(pairs: list[str]) -> dict:
    """`key=value` command-line arguments read as LLaMA-Factory reads them after a recipe (`OmegaConf.from_cli`:
    values are YAML scalars, so `bf16=false` is a boolean and `deepspeed=null` is None)."""
    from omegaconf import OmegaConf

    for pair in pairs:
        key, sep, _ = pair.partition("=")
        if not sep or not key:
            raise RecipeError(f"override {pair!r} is not key=value (e.g. model_name_or_path=/models/Qwen2.5-VL-3B)")
    return OmegaConf.to_container(OmegaConf.from_cli(list(pairs)))


def kind(recipe: dict) -> str:
    """'train', 'predict' or 'export' (DeepSpeed JSON configs are not recipes)."""
    if "export_dir" in recipe:
        return "export"
    if recipe.get("do_predict") and not recipe.get("do_train"):
        return "predict"
    return "train"


def collection() -> Path:
    """The recipes folder: the working directory's (`vlmr init` copies it there), else the package's own."""
    return RECIPES_DIR if RECIPES_DIR.is_dir() else BUNDLED_RECIPES


def all_recipes(root: Path | None = None) -> list[Path]:
    """Every recipe once: `<task>/*.yaml` (the headline aliases directly under `root` are not listed)."""
    return sorted((root or collection()).glob("*/*.yaml"))


def training_recipes(root: Path | None = None) -> list[Path]:
    return [p for p in all_recipes(root) if kind(load(p)) == "train"]


def companion(train_recipe: Path, which: str) -> Path | None:
    """`x.yaml` -> `x_predict.yaml` / `x_export.yaml` beside it, if present (beside the recipe a headline names)."""
    train_recipe = Path(train_recipe).resolve()
    path = train_recipe.with_name(f"{train_recipe.stem}_{which}.yaml")
    return path if path.exists() else None


def tiny_kind(recipe: dict, path: str | Path = "") -> str:
    template = recipe.get("template")
    if template not in TEMPLATE_TO_TINY:
        raise ValueError(
            f"{path}: template {template!r} has no tiny twin; known: {', '.join(TEMPLATE_TO_TINY)} "
            "(add it to the recipe_templates of its architecture's record, plugins/<architecture>/__init__.py)"
        )
    return TEMPLATE_TO_TINY[template]


def dataset_info(dataset_dir: Path = DATASET_DIR) -> DatasetInfo:
    return load_info(dataset_dir)


def bundled_dataset_info() -> DatasetInfo:
    """The registry shipped with the package: the demo datasets and the recipes' datasets with their demo twins."""
    return load_info(BUNDLED_INFO.parent)
