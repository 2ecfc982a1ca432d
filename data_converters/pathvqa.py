"""PathVQA (He et al. 2020) in its Hub Parquet layout (flaviagiammarino/path-vqa: `data/<split>-*.parquet`).

Raw format: columns `image` ({"bytes", "path"}), `question`, `answer`:

    {"image": {"bytes": b"\xff\xd8...", "path": null}, "question": "Are bile duct cells present?", "answer": "yes"}

Output: question -> answer; `answer_type` is "closed" for yes/no answers and "open" otherwise (the paper's
split of question types), kept for the evaluator.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from vlmrecipes.data_converters.readers import iter_parquet
from vlmrecipes.data_converters.schema import MISSING_IMAGE, ImageRef, Record, Skipped
from vlmrecipes.data_converters.tasks import medvqa_sample

DEFAULT_NAME = "pathvqa"
# our split name -> the Hub shard prefix `data/<prefix>-*.parquet` (data_converters/splits.py)
SOURCE_SPLITS = {"train": "train", "validation": "validation", "test": "test"}


def iter_records(input: Path, *, images: Path | None, seed: int, split: str) -> Iterator[Record]:
    shards = sorted(input.glob(f"{SOURCE_SPLITS[split]}-*.parquet")) if input.is_dir() else [input]
    for shard in shards:
        for index, row in iter_parquet(shard, ["image", "question", "answer"]):
            record_id = f"{shard.stem}-{index}"
            image = row["image"] or {}
            if not image.get("bytes"):
                yield Skipped(record_id, MISSING_IMAGE, f"row {index} of {shard.name} has no image bytes")
                continue
            yield medvqa_sample(record_id, ImageRef(image["bytes"], f"{shard.stem}/{index:06d}.jpg"),
                                row["question"], row["answer"], None)
