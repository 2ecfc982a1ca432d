"""FER2013 (Goodfellow et al. 2013, Kaggle release): `fer2013.csv`, 48x48 grey faces as pixel strings.

Raw format: CSV `emotion,pixels,Usage`; `pixels` is 2304 space-separated grey values (row-major 48x48);
Usage is Training | PublicTest | PrivateTest:

    emotion,pixels,Usage
    0,70 80 82 72 58 58 60 63 54 58 60 48 89 115 121 ... (2304 values),Training

Output: a closed-set question over the 7 labels, `label` kept. `--split train|validation|test` selects Training |
PublicTest | PrivateTest (the usual protocol: validate on PublicTest, report PrivateTest).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from vlmrecipes.data_converters.readers import iter_csv
from vlmrecipes.data_converters.schema import BAD_LABEL, FILTERED, MALFORMED, ImageRef, Record, Skipped
from vlmrecipes.data_converters.tasks import classification_sample

DEFAULT_NAME = "fer2013"
LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# our split name -> the Usage value of its rows (data_converters/splits.py)
SOURCE_SPLITS = {"train": "Training", "validation": "PublicTest", "test": "PrivateTest"}
SIDE = 48


def iter_records(input: Path, *, images: Path | None, seed: int, split: str) -> Iterator[Record]:
    from PIL import Image

    usage = SOURCE_SPLITS[split]
    for lineno, row in iter_csv(input, ("emotion", "pixels", "Usage")):
        record_id = f"{input.name}:{lineno}"
        if isinstance(row, ValueError):
            yield Skipped(record_id, MALFORMED, str(row))
            continue
        if row["Usage"] != usage:
            yield Skipped(record_id, FILTERED, f"Usage {row['Usage']!r} is not {usage!r}")
            continue
        try:
            code = int(row["emotion"])
        except (TypeError, ValueError):
            yield Skipped(record_id, BAD_LABEL, f"line {lineno}: emotion {row['emotion']!r} is not 0-6")
            continue
        values = (row["pixels"] or "").split()
        if not 0 <= code < len(LABELS):
            yield Skipped(record_id, BAD_LABEL, f"line {lineno}: emotion {code} is not 0-6")
        elif len(values) != SIDE * SIDE or not all(v.isdigit() and int(v) < 256 for v in values):
            yield Skipped(record_id, MALFORMED, f"line {lineno}: {len(values)} pixel values, need {SIDE * SIDE} "
                                                "integers 0-255")
        else:
            face = Image.frombytes("L", (SIDE, SIDE), bytes(int(v) for v in values))
            yield classification_sample(record_id, ImageRef(face, f"{usage}/{lineno:06d}.png"), LABELS[code],
                                        list(LABELS), subject="the facial expression")
