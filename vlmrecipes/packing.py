"""What a recipe's micro-batches compute, unpacked and packed, from its samples' token lengths.

Both layouts are LLaMA-Factory 0.9.5's, from its own code:
- unpacked: the trainer's random sampler draws `per_device_train_batch_size` samples; `DataCollatorForSeq2Seq`
  pads them to the longest in the micro-batch, rounded up to a multiple of 8 (`pad_to_multiple_of=8`,
  `train/sft/workflow.py`); each sample is cut at `cutoff_len`.
- packed (`packing` / `neat_packing`): `PackedSupervisedDatasetProcessor` fills rows of `cutoff_len - 1` tokens with
  its `greedy_knapsack`, pads every row to `cutoff_len`, and the collator pads that to a multiple of 8.
Computed tokens are every position of every row (padding included: the model runs on it); useful tokens are the
samples' own. Optimizer steps per epoch are for one GPU: micro-batches / gradient_accumulation_steps.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

PAD_TO_MULTIPLE_OF = 8


@dataclass(frozen=True)
class Batching:
    """One epoch of one layout."""

    layout: str  # "unpacked" or "packed"
    rows: int  # sequences the model sees (samples, or packs)
    useful_tokens: int
    computed_tokens: int
    micro_batches: int
    optimizer_steps: int

    @property
    def padding(self) -> float:
        return 1 - self.useful_tokens / self.computed_tokens

    @property
    def computed_per_useful(self) -> float:
        return self.computed_tokens / self.useful_tokens


def _padded(length: int) -> int:
    return math.ceil(length / PAD_TO_MULTIPLE_OF) * PAD_TO_MULTIPLE_OF


def unpacked(lengths: list[int], batch_size: int, cutoff_len: int, accumulation: int = 1, seed: int = 0) -> Batching:
    """Random micro-batches of `batch_size` samples, each padded to its longest sample."""
    order = [min(length, cutoff_len) for length in lengths]
    random.Random(seed).shuffle(order)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    computed = sum(len(batch) * _padded(max(batch)) for batch in batches)
    return Batching("unpacked", len(order), sum(order), computed, len(batches), math.ceil(len(batches) / accumulation))


def pack_lengths(lengths: list[int], cutoff_len: int) -> list[list[int]]:
    """LLaMA-Factory's packs of these lengths (its own greedy knapsack over `cutoff_len - 1` tokens)."""
    from llamafactory.data.processor.processor_utils import greedy_knapsack

    return greedy_knapsack([min(length, cutoff_len - 1) for length in lengths], cutoff_len - 1)


def packed(lengths: list[int], batch_size: int, cutoff_len: int, accumulation: int = 1) -> Batching:
    """Rows of `cutoff_len` tokens filled by LLaMA-Factory's knapsack, `batch_size` rows per micro-batch."""
    packs = pack_lengths(lengths, cutoff_len)
    micro_batches = math.ceil(len(packs) / batch_size)
    return Batching("packed", len(packs), sum(map(sum, packs)), len(packs) * _padded(cutoff_len), micro_batches,
                    math.ceil(micro_batches / accumulation))


def compare(lengths: list[int], recipe: dict) -> tuple[Batching, Batching]:
    """(unpacked, packed) for a recipe's batch size, cutoff_len and gradient accumulation."""
    batch_size = int(recipe.get("per_device_train_batch_size", 1))
    cutoff_len = int(recipe.get("cutoff_len", 2048))
    accumulation = int(recipe.get("gradient_accumulation_steps", 1))
    return (unpacked(lengths, batch_size, cutoff_len, accumulation),
            packed(lengths, batch_size, cutoff_len, accumulation))


def describe(batching: Batching) -> str:
    return (f"{batching.layout:>8}: {batching.rows} rows, padding {batching.padding:.1%}, "
            f"{batching.computed_per_useful:.2f} computed tokens per useful token, "
            f"{batching.optimizer_steps} optimizer steps per epoch")
