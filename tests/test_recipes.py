"""Every recipe under recipes/ is linted and every training recipe is smoke-run on its tiny twin.

Both lists are collected from the folder: a new recipe is picked up with no edit here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import REPO, run_cli

from vlmrecipes import recipes
from vlmrecipes.data_converters import datasets

ALL = recipes.all_recipes(REPO / "recipes")
TRAINING = [p for p in ALL if recipes.kind(recipes.load(p)) == "train"]


def _id(path):
    return str(path.relative_to(REPO / "recipes"))


def test_the_collection_is_not_empty():
    assert TRAINING, "recipes/ holds no training recipe"


def test_headlines_are_links_to_recipes_of_the_collection():
    """`recipes/medct_lora.yaml` and `recipes/emotion_lora.yaml` name scheme-named recipes; listed once."""
    assert sorted(p.name for p in (REPO / "recipes").glob("*.yaml")) == sorted(recipes.HEADLINES)
    for name, target in recipes.HEADLINES.items():
        link = REPO / "recipes" / name
        assert link.is_symlink(), f"{link}: a symbolic link to {target}, not a copy"
        assert link.resolve() == (REPO / "recipes" / target).resolve() and link.resolve() in TRAINING
        assert recipes.companion(link, "predict") == (REPO / "recipes" / target).with_name(
            Path(target).stem + "_predict.yaml")
    assert len(set(ALL)) == len({p.resolve() for p in ALL}) == len(ALL)


@pytest.mark.parametrize("path", ALL, ids=_id)
def test_recipe_lint(path):
    """Parses with LLaMA-Factory's own argument parser; names a template and datasets that exist; documented."""
    from llamafactory.data.template import TEMPLATES
    from llamafactory.hparams.parser import _parse_infer_args, _parse_train_args

    recipe = recipes.load(path)
    kind = recipes.kind(recipe)
    # unknown keys and bad values raise; use_cpu only lets bf16 recipes parse on this GPU-less machine
    if kind == "export":
        _parse_infer_args(dict(recipe))
    else:
        _parse_train_args({**recipe, "use_cpu": True})
    assert recipe.get("template") in TEMPLATES, f"{path}: unknown template {recipe.get('template')!r}"
    info = recipes.bundled_dataset_info()
    for key in ("dataset", "eval_dataset"):
        for name in str(recipe.get(key) or "").split(","):
            if name.strip():
                assert name.strip() in info, f"{path}: {key} {name!r} is not in vlmrecipes/dataset_info.json"
                datasets.demo_twin(name.strip())  # smoke can substitute it
    text = path.read_text()
    assert "memory" in text.lower(), f"{path}: state the GPU memory the recipe needs in a comment"
    assert "### model" in text, f"{path}: use the ### model / ### method / ... sections"
    recipes.tiny_kind(recipe, path)
    if kind == "train":
        assert str(recipe.get("output_dir", "")).startswith("saves/"), f"{path}: output_dir under saves/"
        # a rerun resumes (plugins/resume.py) instead of starting over on top of the checkpoints
        assert "overwrite_output_dir" not in recipe, f"{path}: drop overwrite_output_dir (README: resume)"
        assert recipe.get("report_to") == "tensorboard", f"{path}: report_to: tensorboard (README: tracking)"
        # held-out loss: the dataset's validation split, or records held out of the training data
        assert recipe.get("eval_strategy") == "steps" and ("eval_dataset" in recipe) != ("val_size" in recipe), \
            f"{path}: evaluate during training (eval_dataset or val_size, eval_strategy: steps)"
        if recipe.get("load_best_model_at_end"):
            assert recipe["save_steps"] % recipe["eval_steps"] == 0, f"{path}: save_steps a multiple of eval_steps"
        if "," in str(recipe["dataset"]):
            assert "mix_strategy" in recipe, f"{path}: mixes sources: say how (mix_strategy, interleave_probs)"


@pytest.mark.slow
@pytest.mark.parametrize("path", TRAINING, ids=_id)
def test_recipe_smoke(path, tmp_path, demo_data):
    """The real llamafactory-cli train (+ predict + export + reload) for 2 steps on the recipe's tiny twin."""
    demo_data()
    out = tmp_path / "smoke"
    proc = run_cli(["vlmr", "smoke", str(path), "--out", str(out), "--steps", "2"], timeout=900)
    assert "smoke OK" in proc.stdout
    summary = json.loads(proc.stdout[proc.stdout.index("{"): proc.stdout.rindex("}") + 1])
    assert (out / "train").exists()
    if recipes.companion(path, "predict"):
        rows = (out / "predict" / "generated_predictions.jsonl").read_text().splitlines()
        assert rows and all({"prompt", "predict", "label"} <= json.loads(r).keys() for r in rows)
    if recipes.companion(path, "export"):
        assert any((out / "export").glob("*.safetensors"))
        assert summary["reload_generation"]
