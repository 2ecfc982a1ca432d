"""Two CPU ranks through torchrun (LLaMA-Factory's FORCE_TORCHRUN): DDP and DeepSpeed ZeRO-2, plugin active."""

from __future__ import annotations

import pytest
from helpers import REPO, cli_env, free_port, run_cli


@pytest.mark.slow
def test_deepspeed_zero2_two_ranks_runs_a_recipe(tmp_path, demo_data):
    demo_data()
    out = tmp_path / "ds"
    run_cli(["vlmr", "smoke", str(REPO / "recipes" / "medct_lora.yaml"), "--out", str(out), "--nproc", "2",
             "--deepspeed", "recipes/deepspeed/ds_z2_config.json"], timeout=900)
    log = (out / "train.log").read_text()
    assert "deepspeed=recipes/deepspeed/ds_z2_config.json" in log
    assert "Process rank: 1, world size: 2" in log
    assert (out / "train" / "adapter_model.safetensors").exists()


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
