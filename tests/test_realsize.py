"""Every training recipe's real-size model, built on the meta device from the stored config.json of its checkpoint.

The list of recipes is collected from recipes/: a new recipe is checked with no edit here.
"""

from __future__ import annotations

import json

import pytest
from helpers import REPO

from vlmrecipes import realsize, recipes

TRAINING = recipes.training_recipes(REPO / "recipes")


def _id(path):
    return str(path.relative_to(REPO / "recipes"))


@pytest.mark.parametrize("path", TRAINING, ids=_id)
def test_real_size_model(path):
    """Counts match the published ones; the recipe's freeze flags and LoRA targets act as it says."""
    recipe = recipes.load(path)
    size = realsize.measure(path)

    assert size.checks, f"{path}: nothing compared with a published parameter count"
    for check in size.checks:
        assert abs(check.relative_error) <= realsize.TOLERANCE, (
            f"{path}: {check.what} has {check.ours:,} parameters, published {check.published:,} "
            f"({check.published_as}; {check.source})"
        )
    assert 0 < size.trainable_params <= size.total_params
    freezes_something = (recipe["finetuning_type"] in ("lora", "freeze")
                         or any(recipe.get(flag) for flag in ("freeze_vision_tower", "freeze_language_model",
                                                              "freeze_multi_modal_projector")))
    if freezes_something:
        assert size.trainable_params < size.total_params, f"{path}: freezes nothing although the recipe says so"
    if recipe["finetuning_type"] == "lora":
        assert size.lora_targets and size.lora_wrapped > 0 and size.lora_params > 0
        assert size.trainable_params >= size.lora_params
    if recipe.get("freeze_vision_tower", True):  # LLaMA-Factory's default is a frozen tower
        assert size.vision_keys and size.vision_trainable == 0, f"{path}: the vision tower is trainable"
        assert set(size.vision_keys) <= set(size.frozen_keys)
    else:
        assert size.vision_trainable > 0
    # LLaMA-Factory's LoRA ignores freeze_multi_modal_projector: a recipe that unfreezes the projector must
    # also make it trainable (additional_target), or the flag is a silent no-op.
    if size.projector_keys and recipe.get("freeze_multi_modal_projector") is False:
        assert size.projector_trainable > 0, \
            f"{path}: freeze_multi_modal_projector is false but the projector is frozen"
    elif size.projector_keys and recipe.get("freeze_multi_modal_projector", True):
        assert size.projector_trainable == 0, f"{path}: the projector trains although the recipe freezes it"
    assert size.image_tokens > 0 and size.vision_patches >= size.image_tokens


def test_stored_configs_and_published_counts_cite_their_sources():
    """Each stored config.json and each published count says where it was read."""
    stored = sorted(realsize.CONFIG_DIR.glob("*--*.json"))
    assert stored
    published = json.loads(realsize.PUBLISHED_COUNTS.read_text())
    for path in stored:
        model_id = path.stem.replace("--", "/")
        assert realsize.config_source(model_id).strip(), path
        assert "_source" not in realsize.stored_config(model_id)
        entry = published[model_id]
        assert entry["parameters"] > 0 and entry["source"] and entry["published_as"], model_id


def test_image_tokens_follow_the_processor_arithmetic():
    """Qwen2.5-VL at 512*512 px: smart_resize to 504x504 (multiples of 14*2), 36x36 patches, 18x18 = 324 tokens;
    Qwen3-VL at 128*128 px: its processor's 65536-pixel floor upsizes to 256x256, 16x16 patches, 64 tokens."""
    vl = realsize.measure(REPO / "recipes/medct/qwen2_5_vl_3b_full.yaml")
    assert (vl.image_size, vl.vision_patches, vl.image_tokens) == ((504, 504), 1296, 324)
    qwen3 = realsize.measure(REPO / "recipes/emotion/qwen3_vl_4b_lora.yaml")
    assert (qwen3.image_size, qwen3.vision_patches, qwen3.image_tokens) == ((256, 256), 256, 64)


def test_unknown_checkpoint_is_named_with_the_fix(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model_name_or_path: someone/unknown-vl\nstage: sft\ndo_train: true\n")
    with pytest.raises(ValueError, match=r"someone/unknown-vl.*not a stored checkpoint.*config.json"):
        realsize.build_recipe_model(recipe)
