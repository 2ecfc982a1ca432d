"""The tiny Multiway twin (`vlmr tiny multiway`): the tiny Qwen2.5-VL twin converted by the same `build`."""

from __future__ import annotations

from pathlib import Path

from vlmrecipes.plugins.multiway.build import build
from vlmrecipes.plugins.qwen.tiny import build_qwen2_5_vl

# The same block at test scale (2 shared/routed experts would not exercise top-k; use 4, k=2).
TINY_MULTIWAY = dict(multiway_layers=[1], q_lora_rank=16, kv_lora_rank=16, qk_nope_head_dim=8, v_head_dim=8,
                     n_shared_experts=1, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                     router_aux_loss_coef=0.01)


def build_tiny(out_dir: Path, seed: int = 0) -> Path:
    """The converted twin in `out_dir`, its Qwen2.5-VL base in `out_dir / "base"` (the identity tests load both)."""
    import torch

    base = build_qwen2_5_vl(out_dir / "base", seed)
    torch.manual_seed(seed)  # the new Multiway parameters are deterministic for a seed too
    return build(base, out_dir, **TINY_MULTIWAY)
