"""What packing saves on our CT, emotion and VQA recipes: padding, computed tokens and steps, unpacked vs packed.

    python benchmarks/bench_packing.py [--samples 512] [--json out.json] [RECIPE ...]

For each training recipe of a hub checkpoint (Qwen2.5-VL, Qwen3-VL, Qwen2.5-Omni; or the recipes named), the
recipe's own datasets are synthesized in the shape our converters write them (`benchmarks/gpu/synth.py`
`DATASET_SHAPES`: each dataset's image size and mode, prompt and answer lengths in tokens, with their sources) and
tokenized by LLaMA-Factory's own data pipeline (`get_dataset`: load, align, `SupervisedDatasetProcessor`) with the
recipe's template, `cutoff_len` and pixel limits. The tokenizer is the recipe's tiny twin's (the family's special
tokens and chat template); its image processor is given the real checkpoint's patch, merge and pixel limits, so
every image costs the tokens the real model spends on it (`vlmrecipes.realsize`). The resulting lengths go through
`vlmrecipes.packing`, which lays out the micro-batches the way LLaMA-Factory does; the pack count is checked against
LLaMA-Factory's own packed dataset (`neat_packing: true`).

Within one dataset every synthetic sample has the converter's typical length, so the unpacked padding measured here
comes from mixing datasets and image sizes only: real captions and answers vary more, which adds padding to the
unpacked batches and none to the packed ones. The unpacked figures are therefore a lower bound of the waste.

Columns: the recipe as written (its batch size and cutoff_len), packed into rows of its cutoff_len, and packed into
one row of batch size x cutoff_len per micro-batch (the same tokens per step, so the same planned memory; the
layout `neat_packing` needs under FlashAttention-2, where LLaMA-Factory asserts a batch of one row).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "gpu"))
import synth

from vlmrecipes import packing, realsize, recipes, smoke
from vlmrecipes.plugins.architectures import ARCHITECTURES

# The recipes measured by default (the README's packing table) are those of checkpoints from the hub; the custom
# architectures' recipes (models assembled by `vlmr build`) are measured when named.
HUB_TEMPLATES = {template for arch in ARCHITECTURES if arch.build is None for template in arch.recipe_templates}


def hub_recipes() -> list[Path]:
    return [path for path in recipes.training_recipes() if recipes.load(path).get("template") in HUB_TEMPLATES]


def _llamafactory_args(recipe: dict, twin: Path, dataset_dir: Path, neat_packing: bool) -> dict:
    keep = ("template", "cutoff_len", "image_max_pixels", "image_min_pixels", "enable_thinking", "dataset",
            "mask_history", "train_on_prompt")
    return {**{key: recipe[key] for key in keep if key in recipe}, "model_name_or_path": str(twin), "stage": "sft",
            "do_train": True, "finetuning_type": "lora", "dataset_dir": str(dataset_dir),
            "output_dir": str(dataset_dir / "out"), "overwrite_cache": True, "report_to": "none",
            "preprocessing_num_workers": 1, "neat_packing": neat_packing}


def token_lengths(recipe_path: Path, samples: int) -> tuple[list[int], int]:
    """(sample lengths as LLaMA-Factory tokenizes them, packs in LLaMA-Factory's own packed dataset)."""
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    recipe = recipes.load(recipe_path)
    twin = smoke.tiny_model(recipes.tiny_kind(recipe, recipe_path))
    built = realsize.build_recipe_model(recipe_path, recipe)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        dataset_dir = Path(folder)
        for neat_packing in (False, True):
            model_args, data_args, training_args, _, _ = get_train_args(
                _llamafactory_args(recipe, twin, dataset_dir, neat_packing))
            module = load_tokenizer(model_args)
            synth._real_image_geometry(module["processor"], built)
            if not neat_packing:
                synth.synthesize_data(recipe_path, module["tokenizer"], dataset_dir, samples)
            template = get_template_and_fix_tokenizer(module["tokenizer"], data_args)
            with contextlib.redirect_stdout(io.StringIO()):  # LLaMA-Factory prints a decoded training example
                dataset = get_dataset(template, model_args, data_args, training_args, "sft", **module)["train_dataset"]
            results.append([len(ids) for ids in dataset["input_ids"]])
    return results[0], len(results[1])


def measure(recipe_path: Path, samples: int) -> dict:
    recipe = recipes.load(recipe_path)
    lengths, llamafactory_packs = token_lengths(recipe_path, samples)
    plain, packed = packing.compare(lengths, recipe)
    if packed.rows != llamafactory_packs:
        raise AssertionError(f"{recipe_path}: {packed.rows} packs computed, LLaMA-Factory made {llamafactory_packs}")
    batch_size, cutoff_len = int(recipe["per_device_train_batch_size"]), int(recipe["cutoff_len"])
    one_row = packing.compare(lengths, {**recipe, "per_device_train_batch_size": 1,
                                        "cutoff_len": batch_size * cutoff_len})[1]
    return {"recipe": str(recipe_path.relative_to(recipes.RECIPES_DIR.parent)), "samples": len(lengths),
            "batch_size": batch_size, "cutoff_len": cutoff_len,
            "lengths": {"min": min(lengths), "max": max(lengths), "mean": round(sum(lengths) / len(lengths), 1)},
            "unpacked": plain, "packed": packed, "packed_one_row": one_row}


def table(rows: list[dict]) -> str:
    header = ("| recipe | batch x cutoff_len | sample tokens (min-max) | padding unpacked / packed / packed 1 row "
              "| computed per useful token unpacked / packed / packed 1 row "
              "| steps per epoch unpacked / packed / 1 row |")
    lines = [header, "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        layouts = (row["unpacked"], row["packed"], row["packed_one_row"])
        lines.append(
            f"| `{row['recipe']}` | {row['batch_size']} x {row['cutoff_len']} | {row['lengths']['min']}-"
            f"{row['lengths']['max']} | " + " / ".join(f"{b.padding:.1%}" for b in layouts) + " | "
            + " / ".join(f"{b.computed_per_useful:.2f}" for b in layouts) + " | "
            + " / ".join(str(b.optimizer_steps) for b in layouts) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipes", nargs="*", type=Path,
                        help="training recipes (default: those of hub checkpoints)")
    parser.add_argument("--samples", type=int, default=512,
                        help="synthetic samples per recipe (split over its datasets)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    realsize.quiet_llamafactory()
    rows = [measure(path.resolve(), args.samples) for path in (args.recipes or hub_recipes())]
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(
            [{**row, **{key: {**row[key].__dict__, "padding": row[key].padding,
                              "computed_per_useful": row[key].computed_per_useful}
                        for key in ("unpacked", "packed", "packed_one_row")}} for row in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
