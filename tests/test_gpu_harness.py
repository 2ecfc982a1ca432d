"""benchmarks/gpu: the offline GPU harness on the CPU (one tiny training run), and what it builds at real size.

The real run needs a GPU; here the same code path runs on the recipe's tiny twin, and the real-size inputs are
checked without allocating them (meta device) and against the environment the suite tests.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import sys
import tomllib

import pytest
from helpers import REPO, run_cli

sys.path.insert(0, str(REPO / "benchmarks" / "gpu"))
import run as harness  # noqa: E402
import synth  # noqa: E402

from vlmrecipes import realsize, recipes  # noqa: E402


@pytest.mark.slow
def test_tiny_run_writes_table_and_json(tmp_path):
    out = tmp_path / "results"
    run_cli(["python", "benchmarks/gpu/run.py", "--tiny", "--device", "cpu", "--steps", "3", "--warmup", "1",
             "--modes", "recipe", "--recipes", "recipes/medct_lora.yaml", "--out", str(out)], timeout=600)
    result = json.loads((out / "results.json").read_text())
    assert result["environment"]["versions"]["llamafactory"] == "0.9.5"
    (row,) = result["runs"]
    assert row["status"] == "ok", row
    assert row["overrides"]["max_steps"] == "3" and row["overrides"]["save_strategy"] == "'no'"
    # what the model really ran with, read from the trained model: SDPA (no flash-attn on a CPU) in both towers
    assert row["attention"]["text_config"] == row["attention"]["vision_config"] == "sdpa"
    # medtrinity_ct's shape: 8 prompt + 150 answer tokens, one 512x512 slice; the twin's processor caps it at
    # 256x256 px = 16x16 patches of 16 px = 256 patches, merged 2x2 into 64 image tokens
    assert row["data_shapes"]["medtrinity_ct_train"]["answer_tokens"] == 150
    assert row["image_tokens_per_sample"] == 64 and row["vision_patches_per_sample"] == 256
    assert row["max_sample_tokens"] >= 8 + 150 + 64
    assert row["tokens_per_step"] == 2 * 8 * row["mean_sample_tokens"]  # batch 2 x gradient accumulation 8
    assert row["seconds_per_step"] > 0 and row["tokens_per_second_per_gpu"] > 0
    assert row["parameters"]["vision"] > 0 and row["parameters"]["language"] > 0
    assert len(row["losses"]) == 3 and all(math.isfinite(loss) for loss in row["losses"])
    assert row["mfu"] is None and row["peak_allocated_gib"] is None and row["peak_rss_gib"] > 0  # no GPU here
    plan = row["planner_allocated_gib"]  # the planner speaks of the real 8B model, not the twin
    assert 5 < plan["at_measured_length"] <= plan["at_cutoff_len"] < 80
    table = (out / "results.md").read_text()
    assert "| recipes/medct/qwen3_vl_8b_thinking_lora.yaml | recipe | sdpa / sdpa |" in table


def test_mfu_counts_both_towers_against_the_card_peak():
    probe = {"step_end_seconds": [10.0, 12.0, 14.0, 16.0], "sample_tokens": [300, 500], "sample_image_tokens": [64, 64],
             "vision_merge": 4, "samples_per_step": 16, "world_size": 1, "device": "NVIDIA H100 80GB HBM3",
             "parameters": {"language": 7_000_000_000, "vision": 500_000_000, "embedding": 0, "audio": 0}}
    m = harness.metrics(probe, steps=4, warmup=1)
    assert m["seconds_per_step"] == 2.0  # steps 2-4 only
    assert m["tokens_per_second_per_gpu"] == 16 * 400 / 2.0
    flops = 6 * 7e9 * 16 * 400 + 6 * 0.5e9 * 16 * 64 * 4
    assert m["mfu"] == pytest.approx(flops / 2.0 / 989e12)
    assert harness.peak_tflops("NVIDIA H100 PCIe") == 756 and harness.peak_tflops("some new card") is None


@pytest.mark.parametrize("name", ["medct_lora.yaml", "emotion_lora.yaml", "emotion/qwen2_5_vl_3b_full.yaml",
                                  "general_vqa/siglip_qwen2_5_0_5b_stage2_lora.yaml",
                                  "general_vqa/multiway_qwen2_5_vl_3b_freeze.yaml"])
def test_real_size_checkpoint_is_the_recipe_model_with_the_twin_tokenizer(name):
    """The harness's checkpoint config is realsize's model (same parameter count) whose special-token ids are the
    twin tokenizer's, with the real checkpoint's image geometry."""
    import torch

    path = REPO / "recipes" / name
    config, processor, built, _ = synth.checkpoint_parts(path)
    with torch.device("meta"):
        model = realsize._load_class(config).from_config(config)
    assert realsize.count_parameters(model) == realsize.count_parameters(built.model)
    tokenizer = processor.tokenizer
    assert synth._image_token_id(config) == tokenizer.convert_tokens_to_ids(processor.image_token) < len(tokenizer)
    text = getattr(config, "thinker_config", config)
    text = getattr(text, "text_config", text)
    assert text.vocab_size >= 151643 > len(tokenizer)  # real embedding rows, twin vocabulary
    if built.image_processor_of:
        facts = realsize.preprocessor_facts(built.image_processor_of)
        assert processor.image_processor.patch_size == facts["patch_size"]
        assert processor.image_processor.size["longest_edge"] == facts["max_pixels"]
    else:
        assert processor.patch_size == built.model.config.vision_config.patch_size


def test_lf_defaults_run_parses_and_keeps_only_what_is_trained():
    for path in recipes.training_recipes():
        recipe = recipes.load(path)
        defaults = harness.lf_defaults_recipe(recipe)
        assert set(defaults) <= set(harness.LF_DEFAULTS_KEEP)
        assert defaults["finetuning_type"] == recipe["finetuning_type"] and "flash_attn" not in defaults
        model_args, data_args, training_args, _ = realsize.parse_recipe_args({**defaults, "output_dir": "unused"})
        assert model_args.flash_attn == "auto" and data_args.cutoff_len == 2048 and training_args.deepspeed is None


def test_wheelhouse_pins_are_the_tested_stack():
    """Every wheel `make wheelhouse` fetches is pinned to the version installed here (what the suite tests), and
    the pins our pyproject shares with it agree."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    ours = dict(dep.split("==") for dep in pyproject if "==" in dep)
    for file in ("requirements.txt", "requirements-sdist.txt"):
        for line in (REPO / "benchmarks" / "gpu" / file).read_text().splitlines():
            requirement = line.split("#")[0].strip()
            if not requirement:
                continue
            name, version = requirement.split("==")
            assert importlib.metadata.version(name) == version, f"{file}: {requirement}"
            assert ours.get(name, version) == version, f"{file}: {requirement} vs pyproject {ours[name]}"
