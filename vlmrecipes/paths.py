"""Where vlmr reads and writes: the working directory, and the files shipped with the package.

The working directory (`$VLMR_HOME` when set) holds what a user makes, as with LLaMA-Factory, whose recipes name
`dataset_dir` and `output_dir` relative to where `llamafactory-cli` runs: the dataset registry and converted data
(`dataset_info/`), the recipes (`recipes/`, copied there by `vlmr init`), smoke and demo outputs (`outputs/`)
and the tiny twins' cache (`.cache/`). Nothing is written inside the installed package.

The package ships the recipe collection and the bundled dataset registry (the demo datasets' entries and the
recipes' datasets with their demo twins), which `vlmr init DIR` copies into a working directory. In a wheel the
recipes are package data (`vlmrecipes/recipe_files/`, pyproject.toml maps the checkout's `recipes/` there); an
editable install reads the checkout's own `recipes/`.
"""

import os
from pathlib import Path

HOME = Path(os.environ.get("VLMR_HOME") or Path.cwd()).resolve()
DATASET_DIR = HOME / "dataset_info"
RECIPES_DIR = HOME / "recipes"

PACKAGE = Path(__file__).resolve().parent
BUNDLED_INFO = PACKAGE / "dataset_info.json"
_SHIPPED_RECIPES = PACKAGE / "recipe_files"
BUNDLED_RECIPES = _SHIPPED_RECIPES if _SHIPPED_RECIPES.is_dir() else PACKAGE.parent / "recipes"
