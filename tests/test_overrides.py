"""`key=value` overrides for every vlmr command that reads a recipe (one parser, LLaMA-Factory's), and no wait on the
Hub: a model that is neither local, cached nor downloadable now is one error line, before any record is read."""

from __future__ import annotations

import argparse
import time

import pytest
from helpers import REPO, run_cli

from vlmrecipes import recipes

RECIPE = REPO / "recipes" / "medct" / "qwen2_5_vl_3b_full.yaml"  # names the Hub id Qwen/Qwen2.5-VL-3B-Instruct


def test_overrides_are_read_as_llamafactory_reads_them():
    parsed = recipes.parse_overrides(["bf16=false", "deepspeed=null", "learning_rate=1e-4", "dataset=a,b",
                                      "model_name_or_path=/models/qwen"])
    assert parsed == {"bf16": False, "deepspeed": None, "learning_rate": 1e-4, "dataset": "a,b",
                      "model_name_or_path": "/models/qwen"}
    assert recipes.load(RECIPE, parsed)["bf16"] is False
    with pytest.raises(recipes.RecipeError, match="not key=value"):
        recipes.parse_overrides(["cutoff_len"])


@pytest.mark.parametrize("command", [["validate", "demo_ct_test", "--recipe", str(RECIPE)], ["stats", str(RECIPE)]])
def test_a_hub_model_offline_is_one_line_with_the_fix(command, demo_data):
    demo_data()
    start = time.monotonic()
    proc = run_cli(["vlmr", *command], check=False)  # tests run with HF_HUB_OFFLINE=1 and no such model cached
    assert time.monotonic() - start < 15  # the import of the CLI; no retry loop
    assert proc.returncode == 2 and proc.stdout == ""  # nothing read or reported before the error
    assert proc.stderr.strip().splitlines() == [
        "error: model Qwen/Qwen2.5-VL-3B-Instruct is not in the Hugging Face cache and HF_HUB_OFFLINE is set: point "
        "the recipe at a local copy (`model_name_or_path=/path/to/model` after the recipe) or download it once with "
        "network access (`hf download Qwen/Qwen2.5-VL-3B-Instruct`)"]


def test_validate_with_a_local_model_and_overrides(tiny_model, demo_data):
    demo_data()
    model = tiny_model("qwen2_5_vl")
    proc = run_cli(["vlmr", "validate", "demo_ct_test", "--recipe", str(RECIPE), f"model_name_or_path={model}",
                    "cutoff_len=130"])
    assert "40 records, 0 errors" in proc.stdout
    assert "records exceed cutoff_len 130 (longest 139 tokens" in proc.stdout  # the override, not the recipe's 1024
    misplaced = run_cli(["vlmr", "validate", "demo_ct_test", "cutoff_len=130"], check=False)
    assert misplaced.returncode == 2 and "add --recipe RECIPE" in misplaced.stderr


def test_realsize_takes_overrides(capsys):
    from vlmrecipes import realsize

    recipe = REPO / "recipes" / "emotion" / "qwen3_vl_4b_lora.yaml"  # lora_rank 8
    realsize.run(argparse.Namespace(recipes=[str(recipe), "lora_rank=16"]))
    rank16 = realsize.measure(recipe, {"lora_rank": 16}).lora_params
    assert f"{rank16:,} in LoRA adapters" in capsys.readouterr().out
    assert rank16 == 2 * realsize.measure(recipe).lora_params
