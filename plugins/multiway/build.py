"""Turn a Qwen2.5-VL checkpoint into a Multiway Qwen2.5-VL that equals it at step 0 (`vlmr build multiway`).

The base weights load through transformers' own Qwen2.5-VL class (which also converts the Hub's older key
layout), are copied into `MultiwayQwen2_5_VLForConditionalGeneration`, and only the Multiway parameters are new
(zero gates, so the logits are the base model's). The output directory holds the weights, `config.json` with
`auto_map`, the two modeling files (so it loads with `trust_remote_code=True` anywhere), the processor and the
chat template: point a recipe's `model_name_or_path` at it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from vlmrecipes.plugins.architecture import ComposedConfig, PretrainedPart, StoredCheckpoint

# CLI flag -> MultiwayQwen2_5_VLConfig field; defaults are the config's (sized for the 3B)
_FIELDS = {
    "mla_num_heads": int, "q_lora_rank": int, "kv_lora_rank": int, "qk_nope_head_dim": int, "v_head_dim": int,
    "n_shared_experts": int, "n_routed_experts": int, "num_experts_per_tok": int, "moe_intermediate_size": int,
    "router_aux_loss_coef": float,
}


def multiway_config(base_config, **fields):
    """A MultiwayQwen2_5_VLConfig with the base Qwen2.5-VL config's values and the given Multiway fields."""
    from vlmrecipes.plugins.multiway.configuration_multiway import MultiwayQwen2_5_VLConfig

    if base_config.model_type != "qwen2_5_vl":
        raise ValueError(f"the base must be a Qwen2.5-VL checkpoint (model_type qwen2_5_vl), got "
                         f"{base_config.model_type!r}")
    values = base_config.to_dict()
    for key in ("model_type", "architectures", "auto_map", "transformers_version"):
        values.pop(key, None)
    return MultiwayQwen2_5_VLConfig(**values, **{k: v for k, v in fields.items() if v is not None})


def convert(base_model, **fields):
    """The Multiway model holding `base_model`'s weights (same dtype); raises unless only Multiway keys are new."""
    import torch

    from vlmrecipes.plugins.multiway.modeling_multiway import MultiwayQwen2_5_VLForConditionalGeneration

    config = multiway_config(base_model.config, **fields)
    config._attn_implementation = base_model.config._attn_implementation
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(base_model.dtype)  # build the new parameters directly in the base's dtype
    try:
        model = MultiwayQwen2_5_VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default_dtype)
    missing, unexpected = model.load_state_dict(base_model.state_dict(), strict=False)
    foreign = [k for k in missing if ".multiway." not in k]
    if foreign or unexpected:
        raise ValueError(f"base checkpoint does not match Qwen2.5-VL's layout: missing {foreign[:5]}, "
                         f"unexpected {unexpected[:5]}")
    model.generation_config = base_model.generation_config
    return model.eval()


def max_logit_diff(base_model, model, input_ids) -> float:
    """Max |logit difference| between two models on the same token ids (text only)."""
    import torch

    with torch.no_grad():
        a = base_model(input_ids=input_ids).logits.float()
        b = model(input_ids=input_ids).logits.float()
    return (a - b).abs().max().item()


def build(base: str | Path, out: str | Path, check: bool = True, **fields) -> Path:
    """Load `base` (hub id or directory), convert, check identity on a few tokens, save with code + processor."""
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    base_model = Qwen2_5_VLForConditionalGeneration.from_pretrained(base, dtype="auto").eval()
    model = convert(base_model, **fields)
    if check:
        ids = torch.arange(16).view(1, -1) % base_model.config.text_config.vocab_size
        diff = max_logit_diff(base_model, model, ids)
        if diff != 0.0:
            raise RuntimeError(f"converted model differs from its base by {diff} (max |logit diff|); expected 0")
    out = Path(out)
    model.save_pretrained(out)  # writes auto_map and copies configuration_/modeling_multiway.py
    AutoProcessor.from_pretrained(base).save_pretrained(out)
    return out


# ------------------------------------------------------------------------------------------------------
# vlmr build multiway
# ------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", required=True,
                        help="Qwen2.5-VL hub id or directory, e.g. Qwen/Qwen2.5-VL-3B-Instruct")
    parser.add_argument("--out", required=True, help="output directory, e.g. saves/multiway_qwen2_5_vl_3b/init")
    parser.add_argument("--layers", help="comma-separated decoder layers that get a Multiway block "
                                         "(default: every 8th from layer 1)")
    for name, kind in _FIELDS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, help="see MultiwayQwen2_5_VLConfig")
    parser.add_argument("--no-check", action="store_true", help="skip the base-vs-converted logit comparison")
    parser.add_argument("--seed", type=int, default=0, help="seed of the new parameters' initialisation")


def config_fields(args: argparse.Namespace) -> dict:
    """The MultiwayQwen2_5_VLConfig fields of parsed `vlmr build multiway` flags (None: the config's default)."""
    layers = [int(i) for i in args.layers.split(",")] if args.layers else None
    return {"multiway_layers": layers, **{name: getattr(args, name) for name in _FIELDS}}


def _from_base(parameter_name: str) -> bool:
    """Whether a parameter of the Multiway model is one of its base's (every one but the new Multiway blocks)."""
    return ".multiway." not in parameter_name


def compose(args: argparse.Namespace, stored: Callable[[str], StoredCheckpoint]) -> ComposedConfig:
    """The model `run(args)` would write, as its config: the base's config plus the flags' Multiway fields."""
    return ComposedConfig(
        config=multiway_config(stored(args.base).config, **config_fields(args)),
        parts=(PretrainedPart(args.base, "{checkpoint} part (all but the {others:,} Multiway parameters)",
                              owns=_from_base),),
        description=f"Multiway on {args.base}",
        label=f"Multiway-{Path(args.base).name}",
        image_processor_of=args.base,  # Qwen2.5-VL's processor and towers, unchanged
    )


def run(args: argparse.Namespace) -> int:
    import torch

    torch.manual_seed(args.seed)
    out = build(args.base, args.out, check=not args.no_check, **config_fields(args))
    print(f"Multiway Qwen2.5-VL written to {out}")
    return 0
