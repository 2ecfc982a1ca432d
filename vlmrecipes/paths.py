"""Where the repo's data lives: `dataset_info/` and `recipes/` of the checkout (or the VLMR_HOME override)."""

import os
from pathlib import Path

HOME = Path(os.environ.get("VLMR_HOME", Path(__file__).resolve().parents[1]))
DATASET_DIR = HOME / "dataset_info"
RECIPES_DIR = HOME / "recipes"
