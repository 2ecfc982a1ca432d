"""A converter's output trains with the real `llamafactory-cli train` (tiny Qwen2.5-VL, CPU, 2 steps)."""

from __future__ import annotations

import json

import pytest
from helpers import run_cli
from PIL import Image


@pytest.mark.slow
def test_converted_llava_dataset_trains(tmp_path, tiny_model):
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    records = []
    for i, color in enumerate(["red", "green", "blue", "white"] * 2):
        Image.new("RGB", (300, 200), color).save(raw / "images" / f"{i}.jpg")
        records.append({"id": str(i), "image": f"{i}.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat color is the image?"}, {"from": "gpt", "value": color}]})
    (raw / "chat.json").write_text(json.dumps(records))
    dataset_dir = tmp_path / "dataset_info"
    run_cli(["vlmr", "convert", "llava", "--input", str(raw / "chat.json"), "--dataset-dir", str(dataset_dir),
             "--name", "colors", "--max-pixels", str(56 * 56)])
    run_cli(["vlmr", "validate", "colors_train", "--dataset-dir", str(dataset_dir)])
    recipe = tmp_path / "train.yaml"
    recipe.write_text("\n".join([
        f"model_name_or_path: {tiny_model('qwen2_5_vl')}", "stage: sft", "do_train: true", "finetuning_type: lora",
        "lora_target: all", "dataset: colors_train", f"dataset_dir: {dataset_dir}", "template: qwen2_vl",
        "cutoff_len: 256", f"output_dir: {tmp_path / 'out'}", "per_device_train_batch_size: 2", "max_steps: 2",
        "learning_rate: 1.0e-4", "logging_steps: 1", "report_to: none", "overwrite_output_dir: true",
        "preprocessing_num_workers: 1", "dataloader_num_workers: 0", ""]))
    proc = run_cli(["llamafactory-cli", "train", str(recipe)], timeout=900)
    log = (tmp_path / "out" / "trainer_log.jsonl").read_text().splitlines()
    assert json.loads(log[-1])["current_steps"] == 2, proc.stdout[-2000:]
    assert (tmp_path / "out" / "adapter_model.safetensors").exists()
