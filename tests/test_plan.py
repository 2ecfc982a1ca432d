"""`vlmr plan`: the memory terms on hand-checked numbers, the fits / largest micro-batch logic, and the README table
and recipe headers generated from it."""

from __future__ import annotations

import pytest
from helpers import REPO, run_cli

from vlmrecipes import plan as planner
from vlmrecipes import recipes

MEDCT_LORA = REPO / "recipes/medct_lora.yaml"
GIB = planner.GIB


@pytest.fixture(scope="module")
def all_plans():
    return [planner.plan(path) for path in recipes.training_recipes(REPO / "recipes")]


@pytest.fixture(scope="module")
def medct(all_plans):
    return next(p for p in all_plans if p.recipe.samefile(MEDCT_LORA))


def _term(p, name, b=None):
    return next(term.bytes for term in p.terms(b) if term.name == name)


def test_lora_model_states_by_hand(medct):
    """Qwen3-VL-8B, LoRA r=16 on the 7 projections of 36 layers (h 4096, kv 1024, MLP 12288), no DeepSpeed,
    plus the merger trained in full (additional_target: PEFT keeps a trainable copy beside the frozen one)."""
    per_layer = 16 * ((4096 + 4096) + 2 * (4096 + 1024) + (4096 + 4096) + 2 * (4096 + 12288) + (12288 + 4096))
    lora = 36 * per_layer
    # merger: LayerNorm(1152), Linear(4 * 1152 -> 4608), Linear(4608 -> 4096), biases included
    merger = 2 * 1152 + (4608 * 4608 + 4608) + (4608 * 4096 + 4096)
    trainable = lora + merger
    assert (medct.size.lora_params, medct.size.trainable_params) == (lora, trainable) == (43_646_976, 83_766_016)
    frozen = medct.size.total_params - trainable
    assert frozen == 8_767_123_696  # the published checkpoint: LoRA and the merger copy add, never replace
    assert _term(medct, "weights") == 2 * frozen + 4 * trainable  # LLaMA-Factory upcasts trainable params to fp32
    assert _term(medct, "gradients") == 4 * trainable
    assert _term(medct, "optimizer") == 8 * trainable  # AdamW moments; the fp32 master is the parameter itself
    # fp32 master + moments: 12 bytes per trainable parameter, as the ZeRO paper counts them
    assert _term(medct, "weights") - 2 * frozen + _term(medct, "optimizer") == 12 * trainable


def test_activations_by_hand(medct):
    """Gradient checkpointing keeps 2*s*b*h per layer plus one layer recomputed; logits 10 bytes per vocab entry."""
    s, b, h = 1024, 2, 4096
    per_token_layer = 12 * h + 4 * 1024 + 8 * 12288  # norms, qkv in, q/k/v, o in, mlp in, SwiGLU
    assert _term(medct, "lm activations") == 36 * 2 * s * b * h + s * b * per_token_layer
    assert _term(medct, "logits + loss") == 10 * s * b * 151_936
    assert _term(medct, "lora dropout") == 3 * s * b * (6 * 4096 + 12288)  # one layer's wrapped inputs
    assert _term(medct, "logits + loss", b=4) == 2 * _term(medct, "logits + loss")


@pytest.mark.parametrize("config, weights, gradients, optimizer", [
    ("ds_z2_config.json", lambda P, T: 2 * P, lambda P, T: 2 * T / 4, lambda P, T: 12 * T / 4),
    ("ds_z3_config.json", lambda P, T: 2 * P / 4, lambda P, T: 2 * T / 4, lambda P, T: 12 * T / 4),
    ("ds_z3_offload_config.json", lambda P, T: 0, lambda P, T: 2 * T / 4, lambda P, T: 0),
])
def test_zero_partitions_model_states(config, weights, gradients, optimizer):
    """ZeRO-2 shards gradients and optimizer states over N, ZeRO-3 also the weights, offload moves them to CPU."""
    p = planner.plan(MEDCT_LORA, nproc=4, overrides={"deepspeed": f"recipes/deepspeed/{config}"})
    P, T = p.size.total_params, p.size.trainable_params
    assert (_term(p, "weights"), _term(p, "gradients"), _term(p, "optimizer")) == \
        (weights(P, T), gradients(P, T), optimizer(P, T))
    assert _term(p, "zero buffers") > 0


def test_fits_and_largest_micro_batch(medct):
    for card in (24.0, 40.0, 80.0):
        largest = medct.largest_micro_batch(card)
        assert largest >= 1 and medct.fits(card, largest) and not medct.fits(card, largest + 1)
    assert medct.largest_micro_batch(80.0) > medct.largest_micro_batch(40.0)
    assert medct.largest_micro_batch(10.0) == 0  # 8B bf16 weights alone are 16 GiB
    assert medct.device_total() == pytest.approx(medct.allocated() * 1.1 + 0.6 * GIB)


def test_overrides_change_the_plan(medct):
    smaller = planner.plan(MEDCT_LORA, overrides=planner.parse_overrides(["per_device_train_batch_size=1"]))
    assert smaller.micro_batch == 1 and smaller.allocated() < medct.allocated()
    with pytest.raises(ValueError, match="key=value"):
        planner.parse_overrides(["cutoff_len"])


def test_readme_table_is_the_planners(all_plans):
    """README.md's recipe table is generated: `vlmr plan --readme-table` prints it."""
    readme = (REPO / "README.md").read_text().splitlines()
    header = planner.README_HEADER.splitlines()[0]
    assert header in readme, f"README.md has no table headed {header}"
    start = end = readme.index(header)
    while end < len(readme) and readme[end].startswith("|"):
        end += 1
    expected = planner.readme_table(all_plans)
    assert "\n".join(readme[start:end]) == expected, f"paste `vlmr plan --readme-table` into README.md:\n{expected}"


def test_recipe_headers_carry_the_planned_memory(all_plans):
    for p in all_plans:
        line = planner.header_line(p)
        assert line in p.recipe.read_text().splitlines(), f"{p.recipe}: the header should say\n{line}"


def test_cli_says_when_a_recipe_does_not_fit():
    proc = run_cli(["vlmr", "plan", str(MEDCT_LORA), "--gpu-memory", "16", "per_device_train_batch_size=1"],
                   check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    assert "16 GiB card: does NOT fit at micro-batch 1; largest micro-batch that fits: 0" in proc.stdout
    assert "not yet calibrated on a GPU" in proc.stdout
