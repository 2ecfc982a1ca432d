"""MedTrinity-25M (UCSC-VLAA/MedTrinity-25M on the Hub, gated): image + long multigranular caption, kept
only for one modality selected by matching the caption (the release has no modality column).

Raw format: Parquet shards, columns `image` ({"bytes", "path"} as written by `datasets`), `id`, `caption`:

    {"id": "8031efe0-1b5c-11ef-8929-000066532cad", "image": {"bytes": b"\x89PNG...", "path": null},
     "caption": "The image is a computed tomography (CT) scan of the chest, showing ..."}

Output: "Describe this medical image." -> the caption. Rows whose caption does not match `--modality` are
policy skips (`filtered`); rows without image bytes are `missing_image`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from vlmrecipes.data_converters.readers import iter_parquet
from vlmrecipes.data_converters.schema import (
    EMPTY_TURN,
    FILTERED,
    MISSING_IMAGE,
    ImageRef,
    Record,
    Sample,
    Skipped,
    chat,
)

DEFAULT_NAME = "medtrinity"
PROMPT = "Describe this medical image in detail."
# Caption patterns per modality; word boundaries so "CT" does not match "distinct" or "OCT".
MODALITIES = {
    "ct": re.compile(r"computed tomography|\bCT\b", re.IGNORECASE),
    "mri": re.compile(r"magnetic resonance|\bMRI?\b", re.IGNORECASE),
    "xray": re.compile(r"\bx-?ray\b|radiograph", re.IGNORECASE),
}


def add_arguments(parser) -> None:
    parser.add_argument("--modality", choices=[*MODALITIES, "all"], default="ct", help="keep captions of this modality")


def iter_records(input: Path, *, images: Path | None, seed: int, split: str, modality: str = "ct") -> Iterator[Record]:
    shards = sorted(input.glob("*.parquet")) if input.is_dir() else [input]
    for shard in shards:
        for index, row in iter_parquet(shard, ["id", "image", "caption"]):
            record_id = str(row["id"] or f"{shard.stem}-{index}")
            caption = " ".join(str(row["caption"] or "").split())
            image = row["image"] or {}
            if modality != "all" and not MODALITIES[modality].search(caption):
                yield Skipped(record_id, FILTERED, f"caption does not mention modality {modality!r}")
            elif not caption:
                yield Skipped(record_id, EMPTY_TURN, "empty caption")
            elif not image.get("bytes"):
                yield Skipped(record_id, MISSING_IMAGE, f"row {index} of {shard.name} has no image bytes")
            else:
                image_ref = ImageRef(image["bytes"], f"{shard.stem}/{record_id}.png")
                yield Sample(record_id, chat(PROMPT, caption), [image_ref])
