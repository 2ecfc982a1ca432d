"""Fix: LLaMA-Factory 0.9.5 generates from M-RoPE models without `mm_token_type_ids` (transformers >= 5).

Qwen2-VL / Qwen2.5-VL / Qwen3-VL (and Omni thinkers) place image and video tokens on a 3-D (t, h, w) rotary
grid. In transformers 5, `generate()` builds that grid only when `mm_token_type_ids` (0 text, 1 image,
2 video per token) is among its inputs; without it every image token gets a plain 1-D text position.
LLaMA-Factory's training collator builds the 3-D positions itself, but its two generation paths (the
`do_predict` trainer and the HF chat engine behind `chat`/`webchat`/`api`) pass no `mm_token_type_ids`.
A model trained with the 3-D grid is then queried with another: on our demo, questions about the whole image
still come out right while questions about one object in it fall to chance (48% held-out instead of 98%).

Both paths are wrapped to add `mm_token_type_ids` from the input ids (as the collator does for training)
and, in the trainer, to drop the collator's precomputed `position_ids`/`rope_deltas` so that `generate()`
computes prefill and decoding positions consistently.
"""

from __future__ import annotations

import functools
import inspect


def _rope_index_takes_token_types(model) -> bool:
    for owner in (model, getattr(model, "model", None)):
        rope_index = getattr(owner, "get_rope_index", None)
        if rope_index is not None:
            return "mm_token_type_ids" in inspect.signature(rope_index).parameters
    return False


def mm_token_type_ids(model, input_ids):
    """(batch, seq) long tensor: 1 at image tokens, 2 at video tokens, 0 elsewhere; None if not an M-RoPE model."""
    import torch

    model = getattr(model, "module", model)  # DDP / DeepSpeed wrappers
    if not _rope_index_takes_token_types(model):
        return None
    config = model.config
    image_id = getattr(config, "image_token_id", None)
    video_id = getattr(config, "video_token_id", None)
    if image_id is None and video_id is None:
        return None
    types = torch.zeros_like(input_ids)
    if image_id is not None:
        types[input_ids == image_id] = 1
    if video_id is not None:
        types[input_ids == video_id] = 2
    return types


def patch_trainer_prediction_step(trainer_module) -> None:
    """CustomSeq2SeqTrainer.prediction_step: generation inputs get token types, not collator positions."""
    trainer_class = trainer_module.CustomSeq2SeqTrainer
    original = trainer_class.prediction_step

    @functools.wraps(original)
    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        if self.args.predict_with_generate and "input_ids" in inputs and "mm_token_type_ids" not in inputs:
            types = mm_token_type_ids(model, inputs["input_ids"])
            if types is not None:
                inputs = {k: v for k, v in inputs.items() if k not in ("position_ids", "rope_deltas")}
                inputs["mm_token_type_ids"] = types
        return original(self, model, inputs, prediction_loss_only, ignore_keys=ignore_keys, **gen_kwargs)

    trainer_class.prediction_step = prediction_step


def patch_chat_engine(engine_module) -> None:
    """HuggingfaceEngine._process_args (chat, webchat, api): add token types to the generate kwargs."""
    engine_class = engine_module.HuggingfaceEngine
    original = engine_class._process_args  # a staticmethod, read as a plain function

    @functools.wraps(original)
    def _process_args(model, *args, **kwargs):
        gen_kwargs, prompt_length = original(model, *args, **kwargs)
        if "mm_token_type_ids" not in gen_kwargs and ("image_grid_thw" in gen_kwargs or "video_grid_thw" in gen_kwargs):
            types = mm_token_type_ids(model, gen_kwargs["inputs"])
            if types is not None:
                gen_kwargs["mm_token_type_ids"] = types
        return gen_kwargs, prompt_length

    engine_class._process_args = staticmethod(_process_args)
