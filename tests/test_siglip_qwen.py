"""SigLIP+Qwen (issue 5): the builder, the two-stage recipes on the tiny twin, export, chat, and clear errors.

The training chain runs the recipes of recipes/general_vqa/ unchanged in a temporary working directory, so
their relative paths (`saves/siglip_qwen/stage1` -> stage 2 -> merged export) are what is tested; only the
model of stage 1 (the tiny twin), the data (the demo shapes), the length and CPU switches are overridden.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, cli_env, run_chat_cli, run_cli
from safetensors.torch import load_file

from vlmrecipes import recipes
from vlmrecipes.plugins.qwen.tiny import build_qwen2_lm, chat_template
from vlmrecipes.plugins.siglip_qwen import build, tiny

RECIPES = REPO / "recipes" / "general_vqa"
# CPU and length overrides (LLaMA-Factory `key=value`); the recipes' own values stay otherwise
CPU = {
    "bf16": "false", "report_to": "none", "preprocessing_num_workers": "1", "dataloader_num_workers": "0",
    "per_device_train_batch_size": "4", "gradient_accumulation_steps": "1", "logging_steps": "1",
    "save_steps": "1000", "max_samples": "48",
}
PROJECTOR = "multi_modal_projector."


def _train(recipe: str, cwd: Path, dataset_dir: Path, steps: int, **overrides: str) -> subprocess.CompletedProcess:
    args = {**CPU, "dataset": "demo_shapes_train", "dataset_dir": str(dataset_dir), "max_steps": str(steps),
            **overrides}
    return run_cli(["llamafactory-cli", "train", str(RECIPES / recipe), *(f"{k}={v}" for k, v in args.items())],
                   cwd=cwd)


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "model.safetensors")


def _losses(output_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (output_dir / "trainer_log.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]


@pytest.fixture(scope="module")
def chain(tmp_path_factory, tiny_model, demo_data) -> Path:
    """Stage 1, stage 2 (full and LoRA) and the LoRA export, run from one working directory."""
    work = tmp_path_factory.mktemp("siglip_chain")
    data = demo_data()
    _train("siglip_qwen2_5_0_5b_stage1_align.yaml", work, data, 4, model_name_or_path=str(tiny_model("siglip_qwen")))
    # the tiny random LM needs a larger step than the recipes' 2e-5 / 2e-4 to move visibly in 12 steps
    _train("siglip_qwen2_5_0_5b_stage2_full.yaml", work, data, 12, learning_rate="1.0e-3",
           gradient_checkpointing="false")
    _train("siglip_qwen2_5_0_5b_stage2_lora.yaml", work, data, 4, gradient_checkpointing="false")
    run_cli(["llamafactory-cli", "export", str(RECIPES / "siglip_qwen2_5_0_5b_stage2_lora_export.yaml")], cwd=work)
    return work / "saves" / "siglip_qwen"


def test_stage2_recipes_start_from_stage1_output():
    stage1 = recipes.load(RECIPES / "siglip_qwen2_5_0_5b_stage1_align.yaml")["output_dir"]
    for name in ("siglip_qwen2_5_0_5b_stage2_full.yaml", "siglip_qwen2_5_0_5b_stage2_lora.yaml",
                 "siglip_qwen2_5_0_5b_stage2_lora_export.yaml", "siglip_qwen2_5_0_5b_stage2_lora_predict.yaml"):
        assert recipes.load(RECIPES / name)["model_name_or_path"] == stage1, name


@pytest.mark.slow
def test_stage1_trains_only_the_projector(chain, tiny_model):
    before, after = _weights(tiny_model("siglip_qwen")), _weights(chain / "stage1")
    assert before.keys() == after.keys()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == {name for name in before if name.startswith(PROJECTOR)}, changed


@pytest.mark.slow
def test_stage2_continues_from_stage1_and_the_loss_falls(chain):
    stage1, full = _weights(chain / "stage1"), _weights(chain / "stage2_full")
    # the frozen tower is stage 1's (bitwise); the projector and the LM moved on from there
    for name in stage1:
        if name.startswith("vision_tower."):
            assert torch.equal(stage1[name], full[name]), name
    assert not torch.equal(stage1[PROJECTOR + "linear_1.weight"], full[PROJECTOR + "linear_1.weight"])
    losses = _losses(chain / "stage2_full")
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5, losses


@pytest.mark.slow
def test_lora_export_is_a_plain_llava_checkpoint(chain):
    """The merged model loads and generates with transformers alone: the plugin's autoload hook disabled."""
    merged = chain / "stage2_lora" / "merged"
    config = json.loads((merged / "config.json").read_text())
    assert config["model_type"] == "llava" and "auto_map" not in config
    stage1, lora = _weights(chain / "stage1"), _weights(merged)
    assert not torch.equal(stage1[PROJECTOR + "linear_2.weight"], lora[PROJECTOR + "linear_2.weight"])  # trained
    script = (
        "import sys, torch\n"
        "from PIL import Image\n"
        "from transformers import AutoModelForImageTextToText, AutoProcessor\n"
        f"model = AutoModelForImageTextToText.from_pretrained({str(merged)!r}).eval()\n"
        f"processor = AutoProcessor.from_pretrained({str(merged)!r})\n"
        "messages = [{'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': 'What color?'}]}]\n"
        "text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)\n"
        "inputs = processor(text=[text], images=[Image.new('RGB', (64, 64), (220, 30, 30))], return_tensors='pt')\n"
        "out = model.generate(**inputs, max_new_tokens=3, do_sample=False)\n"
        "plugin = [m for m in sys.modules if m.startswith(('vlmrecipes', 'llamafactory'))]\n"
        "print(type(model).__name__, out.shape[1] - inputs['input_ids'].shape[1], plugin)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], env=cli_env(VLMR_NO_AUTOLOAD="1"), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-3:] == ["LlavaForConditionalGeneration", "3", "[]"], proc.stdout


@pytest.mark.slow
def test_chat_cli_and_image_chat(chain):
    """`llamafactory-cli chat` (text, on stdin) and LLaMA-Factory's ChatModel with an image, on the merged model."""
    merged = str(chain / "stage2_lora" / "merged")
    run_chat_cli(merged, "siglip_qwen", "What color is the square?", max_new_tokens=3)
    script = (
        "from PIL import Image\n"
        "from llamafactory.chat import ChatModel\n"
        f"chat = ChatModel(dict(model_name_or_path={merged!r}, template='siglip_qwen', max_new_tokens=3,"
        " do_sample=False))\n"
        "reply = chat.chat([{'role': 'user', 'content': '<image>What color is the shape?'}],"
        " images=[Image.new('RGB', (64, 64), (220, 30, 30))])[0]\n"
        "print('PROMPT', reply.prompt_length, reply.response_length)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], env=cli_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    prompt, response = map(int, proc.stdout.split("PROMPT")[-1].split())
    patches = (tiny.TINY_IMAGE_SIZE // tiny.TINY_PATCH_SIZE) ** 2
    assert prompt > patches and response >= 1  # the image expanded to its 16 tokens, plus the question


def _vision_and_llm(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    return tiny.tiny_vision(tmp_path / kind, kind), build_qwen2_lm(tmp_path / "qwen2")


@pytest.mark.parametrize("kind, layer, strategy, extra", [
    ("siglip", -1, "full", 0), ("siglip_pair", -1, "full", 0), ("clip", -2, "default", 1),
])
def test_builder(tmp_path, kind, layer, strategy, extra):
    """`vlmr build siglip-qwen` on a SigLIP tower (alone, or in a SigLIP text+vision checkpoint as on the Hub) and
    on a CLIP tower: a Llava checkpoint holding the towers' exact weights and a new projector."""
    from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    vision, llm = _vision_and_llm(tmp_path, kind)
    out = tmp_path / "llava"
    run_cli(["vlmr", "build", "siglip-qwen", "--vision", str(vision), "--llm", str(llm), "--out", str(out)])
    config = json.loads((out / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(out)
    patches = (tiny.TINY_IMAGE_SIZE // tiny.TINY_PATCH_SIZE) ** 2
    assert (config["vision_feature_layer"], config["vision_feature_select_strategy"]) == (layer, strategy)
    assert config["image_seq_length"] == patches  # SigLIP: all patches; CLIP: patches + CLS - CLS
    assert config["image_token_index"] == tokenizer.convert_tokens_to_ids("<image>")
    # the tiny LM's vocabulary was full: `<image>` needed a new embedding row (padded to a multiple of 64)
    assert config["text_config"]["vocab_size"] % 64 == 0 and config["text_config"]["vocab_size"] >= len(tokenizer)
    assert config["text_config"]["vocab_size"] > json.loads((llm / "config.json").read_text())["vocab_size"]

    processor = AutoProcessor.from_pretrained(out)
    assert type(processor).__name__ == "LlavaProcessor"
    assert type(processor.image_processor).__name__ == ("CLIP" if kind == "clip" else "Siglip") + "ImageProcessor"
    assert processor.num_additional_image_tokens == extra
    assert build.check(out) == patches

    built, lm = _weights(out), _weights(llm)
    # a pair checkpoint stores the tower under `vision_model.`; its text tower and logit scale are not used
    tower = {name.removeprefix("vision_model."): tensor for name, tensor in _weights(vision).items()
             if not name.startswith(("text_model.", "logit_"))}
    head = {name for name in tower if name.startswith("head.")}  # SigLIP's pooling head: LLaVA never uses it
    assert {name for name in built if name.startswith("vision_tower.")} == {f"vision_tower.{n}" for n in tower} - {
        f"vision_tower.{n}" for n in head}
    for name in tower.keys() - head:
        assert torch.equal(built["vision_tower." + name], tower[name]), name
    for name, tensor in lm.items():
        target = built["language_model." + name]
        rows = tensor.shape[0]
        assert torch.equal(target[:rows] if name.endswith("embed_tokens.weight") else target, tensor), name
    for linear in ("linear_1", "linear_2"):
        assert torch.count_nonzero(built[f"{PROJECTOR}{linear}.bias"]) == 0
        assert 0.01 < built[f"{PROJECTOR}{linear}.weight"].std() < 0.03  # normal(0, initializer_range=0.02)

    model = AutoModelForImageTextToText.from_pretrained(out)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    _check_compose(vision, llm, out, model)


def _check_compose(vision: Path, llm: Path, out: Path, model) -> None:
    """The record's `compose` (what `vlmr realsize` builds on the meta device for a `vlmr build siglip-qwen` line)
    has the parameters of the model `build` wrote, given an LLM whose vocabulary has room for `<image>` (the tiny LM
    has none: `build` resized it, which `compose` refuses to model)."""
    from transformers import AutoConfig, AutoTokenizer

    from vlmrecipes import build as build_command
    from vlmrecipes import realsize
    from vlmrecipes.plugins.architecture import StoredCheckpoint

    parser = argparse.ArgumentParser()
    build_command.add_arguments(parser)
    args = parser.parse_args(["siglip-qwen", "--vision", str(vision), "--llm", str(llm), "--out", str(out)])
    tokens = len(AutoTokenizer.from_pretrained(llm))
    stored = {str(vision): StoredCheckpoint(AutoConfig.from_pretrained(vision)),
              str(llm): StoredCheckpoint(AutoConfig.from_pretrained(llm), tokens)}
    with pytest.raises(ValueError, match=f"<image> \\(id {tokens}\\) would resize the embeddings"):
        build.compose(args, stored.__getitem__)

    stored[str(llm)].config.vocab_size = model.config.text_config.vocab_size  # the resized vocabulary
    composed = build.compose(args, stored.__getitem__)
    meta = realsize.build_on_meta(composed.config)
    assert {n: p.shape for n, p in meta.named_parameters()} == {n: p.shape for n, p in model.named_parameters()}
    assert composed.config.image_token_id == model.config.image_token_id


def test_multimodal_chat_template_keeps_text_chats_identical(tiny_model):
    """The processor's template is the LLM's own with image parts flattened to `<image>`."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model("siglip_qwen"))
    text_chat = [{"role": "user", "content": "What color is the square?"}, {"role": "assistant", "content": "red"}]
    question = [{"type": "image"}, {"type": "text", "text": "What color is the square?"}]
    image_chat = [{"role": "user", "content": question}, {"role": "assistant", "content": "red"}]
    plain = processor.tokenizer.apply_chat_template(text_chat, tokenize=False,
                                                    chat_template=chat_template("qwen2_5"))
    assert processor.apply_chat_template(text_chat, tokenize=False) == plain
    assert processor.apply_chat_template(image_chat, tokenize=False) == plain.replace("What", "<image>What")


def _dataset(tmp_path: Path, records: list[dict]) -> Path:
    """A ShareGPT dataset `probe` of `records` with two demo PNGs, in its own dataset_dir."""
    from PIL import Image

    for i, color in enumerate(((220, 30, 30), (30, 60, 220))):
        Image.new("RGB", (64, 64), color).save(tmp_path / f"{i}.png")
    (tmp_path / "probe.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"probe": {
        "file_name": "probe.jsonl", "formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
    }}))
    return tmp_path


def _record(question: str, images: list[str]) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": "red"}],
            "images": images}


@pytest.mark.slow
@pytest.mark.parametrize("case", ["placeholders", "cutoff"])
def test_image_token_errors_name_the_sample_and_the_fix(tmp_path, tiny_model, case):
    if case == "placeholders":  # two images, one <image>
        records, overrides = [_record("<image>What color?", ["0.png", "1.png"])], {}
        expected = ["2 image(s) but 1 <image> placeholder(s)", "'<image>What color? | red'", "vlmr validate"]
    else:  # 12 tokens cannot hold the system prompt and 16 image tokens
        records, overrides = [_record("<image>What color?", ["0.png"])] * 2, {"cutoff_len": "12"}
        expected = ["0 <image> tokens for 1 image(s) of 16 tokens each", "`cutoff_len` cut its image tokens",
                    "Raise `cutoff_len`"]
    data = _dataset(tmp_path, records)
    args = {**CPU, "model_name_or_path": str(tiny_model("siglip_qwen")), "dataset": "probe",
            "dataset_dir": str(data), "output_dir": str(tmp_path / "out"), "max_steps": "1",
            "val_size": "0", "eval_strategy": "'no'", **overrides}  # one or two records: nothing to hold out
    proc = run_cli(["llamafactory-cli", "train", str(RECIPES / "siglip_qwen2_5_0_5b_stage1_align.yaml"),
                    *(f"{k}={v}" for k, v in args.items())], cwd=tmp_path, check=False)
    assert proc.returncode != 0
    message = next(line for line in proc.stderr.splitlines() if line.startswith("ValueError"))
    for part in expected:
        assert part in message, message
