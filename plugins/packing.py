"""Fix: LLaMA-Factory 0.9.5's `neat_packing` of M-RoPE models crashes on three ordinary batches.

`neat_packing: true` packs several samples into one row of `cutoff_len` tokens (`data/processor/supervised.py`
`PackedSupervisedDatasetProcessor`), keeps them apart with a block-diagonal attention mask, and gives each
sample its own 3-D (t, h, w) rotary positions: `data/collator.py` calls the model's `get_rope_index` once per
sub-sequence, cut at the pack's `sequence_boundaries`, in `_compute_rope_position_ids_with_packing`. The
boundaries end at the packed length, but the collator makes each row longer afterwards, and then:

1. `cutoff_len` not a multiple of 8 (hiyouga/LlamaFactory#10782, open in 0.9.5; #10737 fixed the same for 1-D
   positions only): the collator pads every row to a multiple of 8 (`pad_to_multiple_of=8` in
   `train/sft/workflow.py`), the merged positions keep the packed length, and the first batch dies with
   `ValueError: Merged position_ids shape mismatch: got torch.Size([3, 1, 203]), expected (3, 1, 208)`.
   Measured on the tiny Qwen2.5-VL, Qwen3-VL and Multiway twins with cutoff_len 203.
2. A batch of text-only samples (hiyouga/LlamaFactory#10314, Qwen3-VL packing of a text dataset): the collator
   appends a placeholder image to the first row (its guard against a ZeRO-3 hang); its `has_dummy_image` branch
   then appends the placeholder's length to the attention mask, which is already that long, so the mask outgrows
   the input and the first forward dies (`RuntimeError: The size of tensor a (208) must match the size of tensor
   b (216)`, sdpa and eager alike). Every text-only sample of a mixed dataset can end up in such a batch.
3. Qwen2.5-Omni: `__call__` refuses any packed batch ("Omni models are not supported for packed sequences for
   now"), although the per-sub-sequence positions it would compute are right for image and text samples.

The fix for 1 and 2: the tokens the collator appends after a pack (its padding to a multiple of 8, the placeholder
image or audio) become one more sub-sequence, masked like the pack's own padding, and LLaMA-Factory's own
per-sub-sequence computation runs on boundaries that cover the row; its `has_dummy_image` branch is no longer
needed. For 3: the Omni row goes through the collator with its packing metadata set aside (everything else is
done as for any batch), and its positions are then recomputed by the same per-sub-sequence function. Packs
holding audio are refused with a clear error: the sub-sequence slicing of audio lengths is not upstream's and
our recipes pack images only.

Measured effect (`tests/test_packing.py`, fp32 on the CPU, eager and sdpa): with the fix every sample of a packed
batch (images of three sizes, a text-only sample, a pack filled to the last token, cutoff_len 8k+r) gets the
same 3-D positions, the same logits (max |diff| 2e-7) and the same loss and gradients as when trained alone,
on the Qwen2.5-VL, Qwen3-VL, Qwen2.5-Omni and Multiway twins; without it each of the three batches above fails.
"""

from __future__ import annotations

import functools

import torch

OMNI_THINKERS = ("qwen2_5_omni_thinker", "qwen3_omni_moe_thinker")


def patch_packed_collator(collator_module) -> None:
    """Fix `MultiModalDataCollatorForSeq2Seq` (the SFT collator's base) in LLaMA-Factory's `data/collator.py`."""
    collator = collator_module.MultiModalDataCollatorForSeq2Seq
    collator._compute_rope_position_ids_with_packing = _covering_appended_tokens(
        collator._compute_rope_position_ids_with_packing)
    collator.__call__ = _packing_omni(collator.__call__)


def covering_boundaries(packing_params: dict | None, row_length: int) -> dict | None:
    """The pack's metadata with one more sub-sequence for the tokens appended after `sequence_boundaries[-1]`."""
    boundaries = (packing_params or {}).get("sequence_boundaries")
    if not boundaries or boundaries[-1] >= row_length:
        return packing_params
    return {**packing_params, "sequence_boundaries": [*boundaries, row_length]}


def _covering_appended_tokens(compute):
    @functools.wraps(compute)
    def _compute_rope_position_ids_with_packing(self, features, mm_inputs, packing_params_list, batch_imglens,
                                                batch_vidlens, batch_audlens, has_dummy_image):
        row_length = features["input_ids"].size(1)  # (batch, row_length) after the collator's padding
        covering = [covering_boundaries(params, row_length) for params in packing_params_list]
        # The placeholder image now lies in the last sub-sequence, whose positions cover it: upstream's
        # `has_dummy_image` branch would append them a second time, and grow the attention mask past the input.
        return compute(self, features, mm_inputs, covering, batch_imglens, batch_vidlens, batch_audlens, False)

    return _compute_rope_position_ids_with_packing


def _is_packed(packing_params: dict | None) -> bool:
    return len((packing_params or {}).get("sequence_boundaries") or []) > 2


def _packing_omni(call):
    @functools.wraps(call)
    def __call__(self, features):
        model_type = getattr(getattr(self.model, "config", None), "model_type", None)
        packing_params = [feature.get("packing_params") for feature in features]
        if model_type not in OMNI_THINKERS or not any(map(_is_packed, packing_params)):
            return call(self, features)
        if any(feature.get("audios") for feature in features):
            raise ValueError(f"neat_packing of {model_type} supports image, video and text samples; this batch "
                             "holds audio. Set neat_packing: false for audio data.")
        image_counts = [len(feature.get("images") or []) for feature in features]
        video_counts = [len(feature.get("videos") or []) for feature in features]
        for feature in features:
            feature.pop("packing_params", None)
        batch = call(self, features)  # rows collated as unpacked ones; their positions are replaced below
        if sum(image_counts) + sum(video_counts) == 0 and batch.get("image_grid_thw") is not None:
            image_counts[0] = len(batch["image_grid_thw"])  # the collator's placeholder image, in row 0
            batch["has_dummy_image"] = True  # as upstream marks it: the FlashAttention-2 path keeps the padding
        rows = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        self._compute_rope_position_ids_with_packing(rows, batch, packing_params, image_counts, video_counts,
                                                     [0] * len(features), False)
        # (3, batch, row_length) -> (4, batch, row_length): the text positions first, as upstream's collator does
        batch["position_ids"] = torch.cat([rows["position_ids"][:1], rows["position_ids"]])
        batch.pop("rope_deltas", None)  # a packed row has no single delta (upstream's packed path sets none)
        return batch

    return __call__
