"""Multiway Qwen2.5-VL (issue 6): Qwen2.5-VL plus Multiway blocks; same tokens, processor and towers as Qwen2.5-VL.

`configuration_multiway.py` and `modeling_multiway.py` are the model (copied next to saved checkpoints for
`trust_remote_code`), `build.py` converts a Qwen2.5-VL checkpoint (`vlmr build multiway`), `tiny.py` builds the
tiny twin; this file is its record.
"""

from __future__ import annotations

from vlmrecipes.plugins.architecture import Architecture, AutoClasses, BuildCommand, chatml_template
from vlmrecipes.plugins.multiway import build, tiny


def _auto_classes() -> tuple[type, type]:
    """The config and model classes, imported on first use (they subclass transformers' Qwen2.5-VL classes)."""
    from vlmrecipes.plugins.multiway.configuration_multiway import MultiwayQwen2_5_VLConfig
    from vlmrecipes.plugins.multiway.modeling_multiway import MultiwayQwen2_5_VLForConditionalGeneration

    return MultiwayQwen2_5_VLConfig, MultiwayQwen2_5_VLForConditionalGeneration


ARCHITECTURE = Architecture(
    name="multiway",
    recipe_templates=("multiway_qwen",),
    tiny=tiny.build_tiny,
    templates={"multiway_qwen": chatml_template("qwen2_vl", image_token="<|image_pad|>", video_token="<|video_pad|>")},
    model_groups={"Multiway-Qwen2.5-VL-3B-Instruct": ("vlm-recipes/multiway-qwen2.5-vl-3b-instruct", "multiway_qwen")},
    # LLaMA-Factory's qwen2_5_vl keys: the Multiway blocks live in `language_model.layers.N.multiway`, so
    # freeze_vision_tower / freeze_multi_modal_projector behave as for Qwen2.5-VL.
    composite_models={"multiway_qwen2_5_vl": dict(
        projector_keys=["visual.merger"],
        vision_model_keys=["visual.patch_embed", "visual.blocks"],
        language_model_keys=["language_model", "lm_head"],
        lora_conflict_keys=["patch_embed"],
    )},
    auto=AutoClasses("multiway_qwen2_5_vl", "MultiwayQwen2_5_VLConfig", "MultiwayQwen2_5_VLForConditionalGeneration",
                     _auto_classes),
    build=BuildCommand("multiway", "Turn a Qwen2.5-VL checkpoint into a Multiway Qwen2.5-VL that equals it at step 0.",
                       build.add_arguments, build.run, build.compose),
)
