"""A record LLaMA-Factory cannot preprocess stops training with its dataset, file:line, what is wrong and the fix.

One real `llamafactory-cli train` (it stops at preprocessing, before the model loads); every other kind of bad
record goes through LLaMA-Factory's own `get_dataset` in-process (the `dataset.map` that training runs), on the
tiny Qwen2.5-VL's real tokenizer and processor.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import pytest
from helpers import run_cli
from PIL import Image

from vlmrecipes.plugins import registry
from vlmrecipes.plugins.dataset_errors import DatasetRecordError, describe_failure

GOOD = "media/ok.png"


def _noise_png() -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(buffer, "PNG")  # incompressible: truncation shows
    return buffer.getvalue()


def _bomb_png() -> bytes:
    """A 1x1 PNG whose header claims 20000 x 20000 pixels: above Pillow's decompression-bomb limit (179 Mpx)."""
    small = io.BytesIO()
    Image.new("L", (1, 1)).save(small, "PNG")
    data = bytearray(small.getvalue())
    header = struct.pack(">II", 20000, 20000) + bytes(data[24:29])  # IHDR: width, height, depth, colour...
    data[16:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header))
    return bytes(data)


# kind -> (file written under media/ (None: none), image entry, user turn, what the error must say)
KINDS = {
    "truncated": (_noise_png()[:600], "media/bad.png", "<image>What is it?", "truncated_image: "),
    "zero_bytes": (b"", "media/bad.png", "<image>What is it?", "empty_image_file: "),
    "html_as_png": (b"<html><body>404 Not Found</body></html>", "media/bad.png", "<image>What is it?",
                    "unreadable_image: "),
    "missing": (None, "media/missing.png", "<image>What is it?", "missing_image: "),
    "bomb": (_bomb_png(), "media/bad.png", "<image>What is it?", "image_too_large: "),
    "two_placeholders": (None, GOOD, "<image><image>Compare them.",
                         "ValueError: The number of images does not match the number of <image> tokens"),
}


def _record(image: str, user: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": "red"}], "images": [image]}


def _dataset(folder: Path, name: str, kind: str) -> Path:
    """`folder`/dataset_info.json registers `name`: a good record on line 1, the `kind` of bad one on line 2."""
    data, image, user, _ = KINDS[kind]
    (folder / "media").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (56, 56), "red").save(folder / GOOD)
    if data is not None:
        (folder / image).write_bytes(data)
    path = folder / f"{name}.jsonl"
    path.write_text(json.dumps(_record(GOOD, "<image>What color?")) + "\n" + json.dumps(_record(image, user)) + "\n")
    info_path = folder / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    info[name] = {"file_name": path.name, "formatting": "sharegpt",
                  "columns": {"messages": "messages", "images": "images"},
                  "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                           "assistant_tag": "assistant"}}
    info_path.write_text(json.dumps(info))
    return path


def _recipe(model: Path, dataset: str, folder: Path) -> dict:
    return {"model_name_or_path": str(model), "stage": "sft", "do_train": True, "finetuning_type": "lora",
            "lora_target": "all", "dataset": dataset, "dataset_dir": str(folder), "template": "qwen2_vl",
            "cutoff_len": 256, "output_dir": str(folder / "out"), "per_device_train_batch_size": 2, "max_steps": 1,
            "report_to": "none", "overwrite_output_dir": True, "overwrite_cache": True,
            "preprocessing_num_workers": 1, "dataloader_num_workers": 0}


@pytest.fixture(scope="module")
def preprocess(tiny_model):
    """preprocess(recipe) runs LLaMA-Factory's own training data path (`get_dataset`: load, align, map)."""
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    for module in ("llamafactory.data.mm_plugin", "llamafactory.data.processor"):
        registry.apply_patch(module)
    tokenizers = {}

    def run(recipe: dict):
        model_args, data_args, training_args, _, _ = get_train_args(recipe)
        if "module" not in tokenizers:
            tokenizers["module"] = load_tokenizer(model_args)
        module = tokenizers["module"]
        template = get_template_and_fix_tokenizer(module["tokenizer"], data_args)
        return get_dataset(template, model_args, data_args, training_args, stage="sft", **module)

    return run


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_preprocessing_error_names_dataset_line_and_fix(kind, tmp_path, tiny_model, preprocess, monkeypatch):
    monkeypatch.chdir(tmp_path)  # LLaMA-Factory opens a missing media_dir path relative to the working dir
    path = _dataset(tmp_path, f"bad_{kind}", kind)
    with pytest.raises(DatasetRecordError) as error:
        preprocess(_recipe(tiny_model("qwen2_5_vl"), f"bad_{kind}", tmp_path))
    message = str(error.value)
    assert message.startswith(f"dataset 'bad_{kind}', record at {path}:2: "), message
    assert KINDS[kind][3] in message
    assert f"Run `vlmr validate bad_{kind} --dataset-dir {tmp_path}`" in message
    if kind != "two_placeholders":
        assert KINDS[kind][1] in message  # the image file


def test_upstream_error_names_no_record(tmp_path, tiny_model, preprocess, monkeypatch):
    """Without the patches, the truncated PNG fails inside transformers' image processor, naming nothing."""
    from llamafactory.data import mm_plugin, processor

    for owner, name in ((mm_plugin.MMPluginMixin, "_preprocess_image"), (mm_plugin.MMPluginMixin, "_regularize_images"),
                        (processor.SupervisedDatasetProcessor, "_encode_data_example")):
        monkeypatch.setattr(owner, name, getattr(owner, name).__wrapped__)
    _dataset(tmp_path, "bad_truncated", "truncated")
    with pytest.raises(OSError) as error:
        preprocess(_recipe(tiny_model("qwen2_5_vl"), "bad_truncated", tmp_path))
    assert str(error.value) == "image file is truncated"
    assert any("image_processing" in str(entry.path) for entry in error.traceback)


@pytest.mark.slow
def test_train_cli_names_the_record(tmp_path, tiny_model):
    path = _dataset(tmp_path, "scans", "truncated")
    recipe = tmp_path / "train.yaml"
    recipe.write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in
                              _recipe(tiny_model("qwen2_5_vl"), "scans", tmp_path).items()))
    proc = run_cli(["llamafactory-cli", "train", str(recipe)], check=False, timeout=600)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("vlmrecipes.plugins.dataset_errors.DatasetRecordError: "
                           f"dataset 'scans', record at {path}:2: "
                           f"truncated_image: {tmp_path / 'media' / 'bad.png'}: image file is truncated"), last
    assert last.endswith(f"Run `vlmr validate scans --dataset-dir {tmp_path}` to list every record LLaMA-Factory "
                         "cannot load, before training again."), last


def test_unlocated_record_names_every_dataset_and_its_images(tmp_path):
    """A record no dataset file holds verbatim (here: images not in either file) still names datasets and files."""
    from llamafactory.hparams import DataArguments

    _dataset(tmp_path, "first", "truncated")
    _dataset(tmp_path, "second", "zero_bytes")
    data_args = DataArguments(dataset="first,second", dataset_dir=str(tmp_path))
    message = describe_failure(data_args, {"images": [str(tmp_path / "elsewhere.png")], "prompt": []},
                               OSError("image file is truncated"))
    assert message == ("a record of dataset 'first' or 'second' "
                       f"(images: {tmp_path / 'elsewhere.png'}): OSError: image "
                       f"file is truncated. Run `vlmr validate first --dataset-dir {tmp_path}` and `vlmr validate "
                       f"second --dataset-dir {tmp_path}` to list every record LLaMA-Factory cannot load, before "
                       "training again.")
