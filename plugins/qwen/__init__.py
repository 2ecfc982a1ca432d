"""Qwen2.5-VL, Qwen3-VL and Qwen2.5-Omni: LLaMA-Factory and transformers support them as they are, so their
records register nothing; they name the templates of the recipes that train them and build their tiny twins
(`tiny.py`, with the families' chat templates in `chat_templates/`)."""

from __future__ import annotations

from vlmrecipes.plugins.architecture import Architecture
from vlmrecipes.plugins.qwen import tiny

QWEN2_5_VL = Architecture("qwen2_5_vl", recipe_templates=("qwen2_vl",), tiny=tiny.build_qwen2_5_vl,
                          tiny_variants={"qwen2_5_vl_demo": tiny.build_qwen2_5_vl_demo})
QWEN3_VL = Architecture("qwen3_vl", recipe_templates=("qwen3_vl", "qwen3_vl_nothink"), tiny=tiny.build_qwen3_vl)
QWEN2_5_OMNI = Architecture("qwen2_5_omni", recipe_templates=("qwen2_omni",), tiny=tiny.build_qwen2_5_omni)

ARCHITECTURES = (QWEN2_5_VL, QWEN3_VL, QWEN2_5_OMNI)
