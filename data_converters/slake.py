"""SLAKE (Liu et al. 2021): `train.json` / `validation.json` / `test.json` and images under `imgs/`.

Raw format: one JSON array per split, English and Chinese questions mixed (`q_lang`):

    {"img_id": 1, "img_name": "xmlab1/source.jpg", "question": "Which part of the body does this image belong to?",
     "answer": "Abdomen", "q_lang": "en", "location": "Abdomen", "modality": "MRI", "answer_type": "OPEN",
     "base_type": "vqa", "content_type": "Position", "triple": ["vhead", "_", "_"], "qid": 0}

Output: question -> answer with `answer_type` closed/open, `modality`, `content_type` and `q_lang` kept (the
evaluator's breakdowns, and how it recognises SLAKE rows); `--lang` keeps one language (others are policy skips).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from vlmrecipes.data_converters.readers import iter_json_array
from vlmrecipes.data_converters.schema import FILTERED, MALFORMED, ImageRef, Record, Skipped
from vlmrecipes.data_converters.tasks import medvqa_sample

DEFAULT_NAME = "slake"


def add_arguments(parser) -> None:
    parser.add_argument("--lang", choices=["en", "zh", "all"], default="en", help="question language to keep")


def iter_records(input: Path, *, images: Path | None, seed: int, split: str, lang: str = "en") -> Iterator[Record]:
    images_dir = images or input.parent / "imgs"
    for index, raw in iter_json_array(input):
        if not isinstance(raw, dict) or not isinstance(raw.get("img_name"), str):
            yield Skipped(str(index), MALFORMED, "expected an object with `img_name`, `question`, `answer`")
            continue
        record_id = str(raw.get("qid", index))
        if lang != "all" and raw.get("q_lang") != lang:
            yield Skipped(record_id, FILTERED, f"q_lang {raw.get('q_lang')!r} is not {lang!r}")
            continue
        name = raw["img_name"]
        yield medvqa_sample(record_id, ImageRef(images_dir / name, name), raw.get("question"), raw.get("answer"),
                            raw.get("answer_type"), {"modality": raw.get("modality"),
                                                     "content_type": raw.get("content_type"),
                                                     "q_lang": raw.get("q_lang")})
