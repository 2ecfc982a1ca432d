"""The tiny SigLIP+Qwen twin (`vlmr tiny siglip_qwen`): tiny random towers saved as checkpoints, assembled by the
same `build` as the real model."""

from __future__ import annotations

import tempfile
from pathlib import Path

from vlmrecipes.plugins.qwen.tiny import build_qwen2_lm
from vlmrecipes.plugins.siglip_qwen.build import build

TINY_IMAGE_SIZE = 32
TINY_PATCH_SIZE = 8  # (32 / 8)^2 = 16 patches per image


def tiny_vision(out_dir: Path, kind: str = "siglip", seed: int = 0) -> Path:
    """A 2-layer random vision tower with its image processor, saved as a checkpoint.

    kind: "siglip" (a SiglipVisionModel), "siglip_pair" (a whole SiglipModel, text tower included, the layout of
    google/siglip-* on the Hub) or "clip" (a CLIPVisionModel).
    """
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    dims = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                image_size=TINY_IMAGE_SIZE, patch_size=TINY_PATCH_SIZE)
    siglip_processor = SiglipImageProcessor(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
    torch.manual_seed(seed)
    if kind == "siglip":
        model, processor = SiglipVisionModel(SiglipVisionConfig(**dims)), siglip_processor
    elif kind == "siglip_pair":
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=128)
        model, processor = SiglipModel(SiglipConfig(text_config=text, vision_config=dims)), siglip_processor
    elif kind == "clip":
        model = CLIPVisionModel(CLIPVisionConfig(**dims, projection_dim=32))
        processor = CLIPImageProcessor(size={"shortest_edge": TINY_IMAGE_SIZE},
                                       crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
    else:
        raise ValueError(f"unknown tiny vision tower {kind!r}: use 'siglip', 'siglip_pair' or 'clip'")
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def build_tiny(out_dir: Path, seed: int = 0, vision: str = "siglip") -> Path:
    """`vlmr tiny siglip_qwen`: tiny SigLIP (or CLIP) + tiny Qwen2 checkpoints, assembled by `build`."""
    with tempfile.TemporaryDirectory(prefix="vlmr-siglip-qwen-") as tmp:
        tower = tiny_vision(Path(tmp) / vision, vision, seed)
        llm = build_qwen2_lm(Path(tmp) / "qwen2", seed)
        return build(tower, llm, out_dir, seed)
