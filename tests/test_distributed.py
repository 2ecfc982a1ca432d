"""Two CPU ranks through torchrun (LLaMA-Factory's FORCE_TORCHRUN): DeepSpeed ZeRO-2 and ZeRO-3, DDP, plugin active.

What proves DeepSpeed really ran is DeepSpeed's own output: its engine's log lines (`vlmr smoke` turns its INFO log
on) and the checkpoint it writes, one ZeRO shard per rank that records its stage and partition count.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from helpers import REPO, cli_env, free_port, run_cli
from safetensors.torch import load_file, save_file

from vlmrecipes import recipes, smoke


def _smoke_two_ranks(recipe: str, out, *extra: str) -> dict:
    proc = run_cli(["vlmr", "smoke", str(REPO / recipe), "--out", str(out), "--nproc", "2", "--train-only", *extra],
                   timeout=900)
    return json.loads(proc.stdout[proc.stdout.index("{"): proc.stdout.rindex("}") + 1])


def _zero_shards(train_out, stage: int, recipe: dict, model_states: str) -> None:
    """Each rank's optimizer shard of the last-step checkpoint says: this ZeRO stage, partitioned over 2 ranks.

    DeepSpeed's own step counters say its "auto" batch settings were filled from the recipe: 2 optimizer steps
    of gradient_accumulation_steps x per_device_train_batch_size samples on each of the 2 ranks.
    """
    step_dir = train_out / "checkpoint-2" / "global_step2"
    engine = torch.load(step_dir / model_states, map_location="cpu", weights_only=False)
    assert engine["global_steps"] == 2 and engine["skipped_steps"] == 0
    samples_per_step = recipe["gradient_accumulation_steps"] * recipe["per_device_train_batch_size"] * 2
    assert engine["global_samples"] == 2 * samples_per_step
    for rank in range(2):
        shard = torch.load(step_dir / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt", map_location="cpu",
                           weights_only=False)  # DeepSpeed's own pickle (enums, its config)
        state = shard["optimizer_state_dict"]
        partitions = state["partition_count"]
        assert int(state["zero_stage"]) == stage
        assert set(partitions if isinstance(partitions, list) else [partitions]) == {2}
        assert shard["ds_config"]["zero_optimization"]["stage"] == stage


@pytest.mark.slow
def test_deepspeed_zero2_two_ranks(tmp_path, demo_data):
    demo_data()
    out = tmp_path / "z2"
    summary = _smoke_two_ranks("recipes/medct_lora.yaml", out, "--deepspeed", "recipes/deepspeed/ds_z2_config.json")
    log = (out / "train.log").read_text()
    assert "Process rank: 1, world size: 2" in log
    assert re.search(r"\[Rank 0\] Creating \S+ ZeRO stage 2 optimizer", log)
    assert "DeepSpeed Final Optimizer = DeepSpeedZeroOptimizer\n" in log
    # ZeRO-2 shards optimizer states and gradients, not parameters: one model-states file, a shard per rank
    step_dir = out / "train" / "checkpoint-2" / "global_step2"
    assert sorted(p.name for p in step_dir.iterdir()) == [
        "mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    _zero_shards(out / "train", 2, recipes.load(REPO / "recipes/medct_lora.yaml"), "mp_rank_00_model_states.pt")
    assert summary["checks"]["weights"] == ["adapter_model.safetensors"]

    # `vlmr smoke`'s own check, on copies of this run's real output with one thing broken each
    def check_broken(name: str, damage, message: str) -> None:
        copy = tmp_path / name
        shutil.copytree(out / "train", copy)
        damage(copy)
        with pytest.raises(smoke.SmokeFailure, match=message):
            smoke.check_training(copy, steps=2, deepspeed_ranks=2, base_model=Path(summary["tiny_model"]))

    def nan_loss(run):
        state = json.loads((run / "trainer_state.json").read_text())
        state["log_history"][1]["loss"] = math.nan
        (run / "trainer_state.json").write_text(json.dumps(state))

    def untrained_adapter(run):  # what a run whose gradients never reach the adapter saves
        adapter = load_file(run / "adapter_model.safetensors")
        save_file({name: tensor.zero_() if "lora_B" in name else tensor for name, tensor in adapter.items()},
                  run / "adapter_model.safetensors")

    check_broken("nan", nan_loss, "non-finite training loss")
    check_broken("noweights", lambda run: (run / "adapter_model.safetensors").unlink(), "weights were not saved")
    check_broken("untrained", untrained_adapter, "no gradient reached the trainable parameters")
    rank1_shard = step_dir.relative_to(out / "train") / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    check_broken("noshard", lambda run: (run / rank1_shard).unlink(), "expected one per rank")
    with pytest.raises(smoke.SmokeFailure, match="global_step is 2, expected 3"):
        smoke.check_training(out / "train", steps=3)


@pytest.mark.slow
def test_deepspeed_zero3_two_ranks_keeps_the_frozen_vision_tower(tmp_path, demo_data):
    """A `*_3b_full` recipe with its own ZeRO-3 config: parameters partitioned, the frozen tower saved intact."""
    demo_data()
    out = tmp_path / "z3"
    recipe = "recipes/medct/qwen2_5_vl_3b_full.yaml"
    assert recipes.load(REPO / recipe)["deepspeed"] == "recipes/deepspeed/ds_z3_config.json"
    summary = _smoke_two_ranks(recipe, out)
    assert summary["deepspeed"] == "recipes/deepspeed/ds_z3_config.json"
    log = (out / "train.log").read_text()
    assert "Detected DeepSpeed ZeRO-3: activating zero.init() for this model" in log  # transformers' loader
    assert re.search(r"\[Rank 0\] Creating \S+ ZeRO stage 3 optimizer", log)
    assert "DeepSpeed Final Optimizer = DeepSpeedZeroOptimizer_Stage3" in log
    # ZeRO-3 partitions the parameters too: each rank writes its own model-states file
    step_dir = out / "train" / "checkpoint-2" / "global_step2"
    assert sorted(p.name for p in step_dir.glob("*model_states.pt")) == [
        "zero_pp_rank_0_mp_rank_00_model_states.pt", "zero_pp_rank_1_mp_rank_00_model_states.pt"]
    _zero_shards(out / "train", 3, recipes.load(REPO / recipe), "zero_pp_rank_0_mp_rank_00_model_states.pt")

    # The weights gathered at save (stage3_gather_16bit_weights_on_model_save): every tensor is there, the
    # vision tower that `freeze_vision_tower: true` froze is bit-identical to the start, the rest trained.
    from llamafactory.model.model_utils.visual import COMPOSITE_MODELS

    vision_keys = COMPOSITE_MODELS["qwen2_5_vl"].vision_model_keys
    before = load_file(f"{summary['tiny_model']}/model.safetensors")
    after = load_file(out / "train" / "model.safetensors")
    assert after.keys() == before.keys()
    frozen = [name for name in before if any(key in name for key in vision_keys)]
    assert frozen and all(torch.equal(before[name], after[name]) for name in frozen)
    assert any(not torch.equal(before[name], after[name]) for name in before if name.startswith("model.layers."))


@pytest.mark.slow
def test_ddp_two_ranks_see_the_plugin_template(tmp_path, tiny_model, demo_data):
    """Each torchrun worker resolves `template: siglip_qwen`, which only our autoload hook registers."""
    dataset_dir = demo_data()
    model = tiny_model("siglip_qwen")
    recipe = tmp_path / "siglip_lora.yaml"
    recipe.write_text(
        f"model_name_or_path: {model}\nstage: sft\ndo_train: true\nfinetuning_type: lora\nlora_target: all\n"
        f"dataset: demo_shapes_train\ndataset_dir: {dataset_dir}\ntemplate: siglip_qwen\ncutoff_len: 256\n"
        f"max_steps: 2\nper_device_train_batch_size: 2\noutput_dir: {tmp_path / 'out'}\nreport_to: none\n"
        "ddp_backend: gloo\npreprocessing_num_workers: 1\ndataloader_num_workers: 0\noverwrite_cache: true\n"
    )
    proc = run_cli(["llamafactory-cli", "train", str(recipe)], timeout=900,
                   env=cli_env(FORCE_TORCHRUN="1", NPROC_PER_NODE="2", MASTER_PORT=str(free_port())))
    output = proc.stdout + proc.stderr
    assert "Process rank: 1, world size: 2" in output
    assert (tmp_path / "out" / "adapter_model.safetensors").exists()
