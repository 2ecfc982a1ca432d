"""VQA-RAD (Lau et al. 2018, OSF release): `VQA_RAD Dataset Public.json` and `VQA_RAD Image Folder/`.

Raw format: one JSON array; test questions have a `phrase_type` starting with "test" (test_freeform /
test_para), the rest are training questions:

    {"qid": 0, "image_name": "synpic54610.jpg", "image_organ": "HEAD", "answer": "Yes", "answer_type": "CLOSED",
     "question_type": "PRES", "question": "Are regions of the brain infarcted?", "phrase_type": "freeform"}

Output: question -> answer, `answer_type` closed/open and `question_type` kept for the evaluator.
`--split test` selects the test questions, `--split train` the training ones (VQA-RAD has no validation split).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from vlmrecipes.data_converters.readers import iter_json_array
from vlmrecipes.data_converters.schema import FILTERED, MALFORMED, ImageRef, Record, Skipped
from vlmrecipes.data_converters.tasks import medvqa_sample

DEFAULT_NAME = "vqa_rad"
# the splits the source has (data_converters/splits.py): test = phrase_type test_*, train = the other questions
SOURCE_SPLITS = {"train": "train", "test": "test"}


def iter_records(input: Path, *, images: Path | None, seed: int, split: str) -> Iterator[Record]:
    images_dir = images or input.parent / "VQA_RAD Image Folder"
    for index, raw in iter_json_array(input):
        if not isinstance(raw, dict) or not isinstance(raw.get("image_name"), str):
            yield Skipped(str(index), MALFORMED, "expected an object with `image_name`, `question`, `answer`")
            continue
        record_id = str(raw.get("qid", index))
        if str(raw.get("phrase_type", "")).startswith("test") != (split == "test"):
            yield Skipped(record_id, FILTERED, f"phrase_type {raw.get('phrase_type')!r} belongs to the other split")
            continue
        name = raw["image_name"]
        yield medvqa_sample(record_id, ImageRef(images_dir / name, name), raw.get("question"), raw.get("answer"),
                            raw.get("answer_type"), {"question_type": raw.get("question_type")})
