"""Tiny twins: the real architecture classes, small, deterministic, with the family's tokens and processor."""

from __future__ import annotations

import hashlib

import pytest
from helpers import run_cli

QWEN_KINDS = ["qwen2_5_vl", "qwen3_vl", "qwen2_5_omni"]
EXPECTED_CLASS = {
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
    "qwen2_5_omni": "Qwen2_5OmniForConditionalGeneration",
}


@pytest.mark.parametrize("kind", QWEN_KINDS)
def test_tiny_twin_is_the_real_class_small_and_consistent(kind, tiny_model):
    import torch
    from PIL import Image
    from transformers import AutoConfig, AutoProcessor

    path = tiny_model(kind)
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    assert size < 5e6, f"{kind} tiny model is {size / 1e6:.1f} MB"
    config = AutoConfig.from_pretrained(path)
    assert config.architectures == [EXPECTED_CLASS[kind]]
    processor = AutoProcessor.from_pretrained(path)
    tokenizer = processor.tokenizer
    # every id the model uses for a modality slot is a real special token of the vocabulary
    model_config = config.thinker_config if kind == "qwen2_5_omni" else config
    image_id = getattr(model_config, "image_token_id", None) or model_config.image_token_index
    assert tokenizer.convert_ids_to_tokens(image_id) in ("<|image_pad|>", "<|IMAGE|>")
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") != tokenizer.unk_token_id

    # the family's chat template + processor expand one image into its image tokens, and the model runs
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is it?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[Image.new("RGB", (64, 64), (200, 10, 10))], return_tensors="pt")
    n_image_tokens = int((inputs["input_ids"] == image_id).sum())
    assert n_image_tokens >= 4
    if kind == "qwen2_5_omni":
        from transformers import Qwen2_5OmniThinkerForConditionalGeneration as cls

        model = cls.from_pretrained(path)  # LLaMA-Factory trains the thinker
    else:
        from transformers import AutoModelForImageTextToText as cls

        model = cls.from_pretrained(path)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape
    assert torch.isfinite(logits).all()


def test_tiny_build_is_deterministic(tmp_path, tiny_model):
    cached = tiny_model("qwen2_5_vl")
    run_cli(["vlmr", "tiny", "qwen2_5_vl", "--out", str(tmp_path / "again"), "--seed", "0"])
    digest = lambda p: hashlib.sha256((p / "model.safetensors").read_bytes()).hexdigest()  # noqa: E731
    assert digest(cached) == digest(tmp_path / "again")
    assert (cached / "tokenizer.json").read_text() == (tmp_path / "again" / "tokenizer.json").read_text()
