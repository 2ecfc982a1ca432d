"""`vlmr init DIR`: a working directory to run the recipes from, with a regular install and outside our checkout.

Copies the recipe collection (`recipes/<task>/*.yaml` and `recipes/deepspeed/*.json`), links the headline recipes
(`recipes/medct_lora.yaml`, `recipes/emotion_lora.yaml`; copies where the file system has no symbolic links) and
adds the bundled dataset entries to `DIR/dataset_info/dataset_info.json`: the demo datasets, and the recipes'
datasets with the demo twins `vlmr smoke` trains on. It never overwrites: a recipe already there is kept (delete
it to get ours back), a dataset already registered keeps its entry (your conversion wins), so running it again
only adds what is missing. Afterwards run everything from DIR: `llamafactory-cli train recipes/...` and every
`vlmr` command read and write there (`dataset_info/`, `saves/`, `outputs/`, `.cache/`).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from vlmrecipes import paths, recipes
from vlmrecipes.data_converters.datasets import register_missing


def _recipe_files(root: Path) -> list[Path]:
    return sorted([*root.glob("*/*.yaml"), *root.glob("deepspeed/*.json")])


def init(directory: Path) -> dict[str, list[str]]:
    """Set up `directory`; returns what was done: {"copied", "kept", "linked", "registered"} (relative names)."""
    directory = directory.resolve()
    target = directory / "recipes"
    done: dict[str, list[str]] = {"copied": [], "kept": [], "linked": [], "registered": []}
    for source in _recipe_files(paths.BUNDLED_RECIPES):
        name = source.relative_to(paths.BUNDLED_RECIPES)
        copy = target / name
        if copy.exists():
            if copy.resolve() != source.resolve() and copy.read_bytes() != source.read_bytes():
                done["kept"].append(str(name))
            continue
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, copy)
        done["copied"].append(str(name))
    for alias, recipe in recipes.HEADLINES.items():
        link = target / alias
        if link.exists() or link.is_symlink():
            continue
        try:
            link.symlink_to(recipe)
        except OSError:  # no symbolic links on this file system (Windows without developer mode)
            shutil.copyfile(target / recipe, link)
        done["linked"].append(f"{alias} -> {recipe}")
    done["registered"] = register_missing(directory / "dataset_info", recipes.bundled_dataset_info())
    return done


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, nargs="?", default=Path("."),
                        help="the working directory to set up (created if missing; default: this one)")


def run(args: argparse.Namespace) -> int:
    done = init(args.directory)
    where = args.directory.resolve()
    print(f"{where}: {len(done['copied'])} recipe files copied to recipes/, {len(done['linked'])} headline links, "
          f"{len(done['registered'])} datasets registered in dataset_info/dataset_info.json")
    for name in done["kept"]:
        print(f"  kept your recipes/{name} (it differs from ours; delete it to get ours)")
    print(f"next, from {where}:\n"
          "  vlmr smoke recipes/medct_lora.yaml     # the recipe's real training on its tiny twin, on the CPU\n"
          "  vlmr convert SOURCE --input RAW        # your data, registered in dataset_info/ (see the recipe)\n"
          "  llamafactory-cli train recipes/medct_lora.yaml")
    return 0
