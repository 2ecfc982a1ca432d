"""minimind-v datasets (jingyaogong/minimind-v): pretrain and SFT image-text conversations.

Raw formats:
- current: `pretrain_i2t.parquet` / `sft_i2t.parquet`, columns `conversations` (a JSON string of role/content
  turns with `<image>`) and `image_bytes` (JPEG); some SFT rows are text-only and carry a tiny black
  placeholder image:

      {"conversations": "[{\"role\": \"user\", \"content\": \"<image>\\n描述图片\"},
                          {\"role\": \"assistant\", \"content\": \"一只猫。\"}]", "image_bytes": b"\xff\xd8..."}

- legacy: `*_data.jsonl` + images folder (unzipped `*_images.zip`), LLaVA-style turns; multi-image rows name
  their images in one comma-separated string:

      {"conversations": [{"role": "user", "content": "<image>\\n<image>\\n比较两张图"}, ...], "image": "0.jpg, 1.jpg"}

Output: the turns as they are. A row whose conversation has no `<image>` is emitted text-only (its image is
the placeholder); any other `<image>`/image count mismatch is skipped by the writer's check.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from vlmrecipes.data_converters.datasets import DatasetError, json_type
from vlmrecipes.data_converters.readers import iter_jsonl, iter_parquet
from vlmrecipes.data_converters.schema import IMAGE_TOKEN, MALFORMED, ImageRef, Record, Sample, Skipped

DEFAULT_NAME = "minimind_v"


def _turns(raw: object) -> list[dict] | None:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            return None
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        return None
    return [{"role": t.get("role"), "content": t.get("content")} for t in raw]


def _sample(record_id: str, turns: list[dict] | None, refs: list[ImageRef]) -> Record:
    if turns is None:
        return Skipped(record_id, MALFORMED, "`conversations` must be a list (or JSON string) of {role, content}")
    if not any(IMAGE_TOKEN in str(t["content"]) for t in turns):
        refs = []  # text-only SFT row: its image is minimind-v's black placeholder
    return Sample(record_id, turns, refs)


def iter_records(input: Path, *, images: Path | None, seed: int, split: str) -> Iterator[Record]:
    if input.suffix == ".parquet":
        for index, row in iter_parquet(input, ["conversations", "image_bytes"]):
            record_id = f"{input.stem}-{index}"
            refs = [ImageRef(row["image_bytes"], f"{input.stem}/{index:08d}.jpg")] if row["image_bytes"] else []
            yield _sample(record_id, _turns(row["conversations"]), refs)
        return
    images_dir = images or input.parent / input.stem.replace("_data", "_images")
    for lineno, row in iter_jsonl(input):
        record_id = f"{input.name}:{lineno}"
        if isinstance(row, DatasetError):
            yield Skipped(record_id, MALFORMED, str(row))
            continue
        if not isinstance(row, dict):
            yield Skipped(record_id, MALFORMED,
                          f"line {lineno} is a JSON {json_type(row)}, not an object: fix the line")
            continue
        names = [n.strip() for n in str(row.get("image") or "").split(",") if n.strip()]
        yield _sample(record_id, _turns(row.get("conversations")), [ImageRef(images_dir / n, n) for n in names])
