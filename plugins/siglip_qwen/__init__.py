"""SigLIP+Qwen: a SigLIP (or CLIP) tower, a two-layer MLP projector and a Qwen2.5 LM, as transformers' LLaVA.

`build.py` assembles it from pretrained checkpoints (`vlmr build siglip-qwen`), `tiny.py` builds its tiny twin,
`mm_plugin.py` is LLaMA-Factory's llava plugin with clear image-token errors; this file is its record.
LLaMA-Factory trains it as its built-in composite model "llava" (vision_tower / multi_modal_projector /
language_model), so the record adds no composite keys and no Auto classes.
"""

from __future__ import annotations

from vlmrecipes.plugins.architecture import Architecture, BuildCommand, chatml_template
from vlmrecipes.plugins.siglip_qwen import build, tiny


def _mm_plugin() -> type:
    """The plugin class, imported on first use: it subclasses LLaMA-Factory's LlavaPlugin (see architecture.py)."""
    from vlmrecipes.plugins.siglip_qwen.mm_plugin import SiglipQwenPlugin

    return SiglipQwenPlugin


ARCHITECTURE = Architecture(
    name="siglip_qwen",
    recipe_templates=("siglip_qwen",),
    tiny=tiny.build_tiny,
    # Qwen2.5's ChatML, images as `<image>` placeholders expanded by the llava plugin to `image_seq_length` tokens;
    # our subclass names the record and the fix when image tokens are miscounted or cut by cutoff_len.
    templates={"siglip_qwen": chatml_template("siglip_qwen", image_token=build.IMAGE_TOKEN)},
    mm_plugins={"siglip_qwen": _mm_plugin},
    model_groups={"SigLIP-Qwen2.5-0.5B-Instruct": ("vlm-recipes/siglip-qwen2.5-0.5b-instruct", "siglip_qwen")},
    build=BuildCommand("siglip-qwen", "Build a LLaVA-style SigLIP (or CLIP) + Qwen2.5 model as a standard "
                       "transformers `LlavaForConditionalGeneration`.", build.add_arguments, build.run,
                       build.compose),
)
