"""VQAv2 (`v2_OpenEnded_mscoco_<subtype>_questions.json` + `v2_mscoco_<subtype>_annotations.json`, images
`<subtype>/COCO_<subtype>_<12-digit image id>.jpg`, subtype train2014 | val2014).

Raw format (visualqa.org, "Input/Output format"):

    questions:   {"questions": [{"image_id": 458752, "question": "What is this photo taken looking through?",
                                 "question_id": 458752000}]}
    annotations: {"annotations": [{"question_id": 458752000, "image_id": 458752, "answer_type": "other",
                                   "multiple_choice_answer": "net",
                                   "answers": [{"answer": "net", "answer_confidence": "maybe", "answer_id": 1},
                                               ... 10 in all]}]}

Output: question + LLaVA-1.5's short-answer instruction, answer = `multiple_choice_answer`; the ten raw
`answers`, `answer_type` and `question_id` are kept for the VQA accuracy evaluator. Annotations are indexed
by question id in a temporary SQLite file (the official files share an order, but nothing guarantees it;
443K annotations with ten answers each would not fit the memory bound as Python objects).
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

from vlmrecipes.data_converters.readers import iter_json_array
from vlmrecipes.data_converters.schema import BAD_LABEL, MALFORMED, ImageRef, Record, Skipped
from vlmrecipes.data_converters.tasks import vqa_sample

DEFAULT_NAME = "vqav2"
ANSWER_TYPES = ("yes/no", "number", "other")


def add_arguments(parser) -> None:
    parser.add_argument("--annotations", type=Path,
                        help="annotations file (default: v2_mscoco_<subtype>_annotations.json beside --input)")


def _subtype(questions: Path) -> str:
    # v2_OpenEnded_mscoco_train2014_questions.json -> train2014
    return questions.stem.removesuffix("_questions").rsplit("_", 1)[-1]


def iter_records(input: Path, *, images: Path | None, seed: int, split: str,
                 annotations: Path | None = None) -> Iterator[Record]:
    subtype = _subtype(input)
    images_dir = images or input.parent / subtype
    annotations = annotations or input.parent / f"v2_mscoco_{subtype}_annotations.json"
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp) / "annotations.sqlite")
        db.execute("CREATE TABLE ann (qid INTEGER PRIMARY KEY, body TEXT)")
        db.executemany("INSERT OR REPLACE INTO ann VALUES (?, ?)",
                       ((a["question_id"], json.dumps(a)) for _, a in iter_json_array(annotations, "annotations.item")
                        if isinstance(a, dict) and isinstance(a.get("question_id"), int)))
        for index, q in iter_json_array(input, "questions.item"):
            record_id = str(q.get("question_id", index)) if isinstance(q, dict) else str(index)
            qid = q.get("question_id") if isinstance(q, dict) else None
            row = db.execute("SELECT body FROM ann WHERE qid = ?", (qid,)).fetchone() \
                if isinstance(qid, int) and not isinstance(qid, bool) else None
            if row is None:
                yield Skipped(record_id, MALFORMED, f"no annotation for question {record_id} in {annotations.name}: "
                                                    "pass the matching --annotations file")
                continue
            yield _sample(record_id, q, json.loads(row[0]), images_dir, subtype)
        db.close()


def _sample(record_id: str, q: dict, ann: dict, images_dir: Path, subtype: str) -> Record:
    answers = [a.get("answer") for a in ann.get("answers") or [] if isinstance(a, dict)]
    if len(answers) != 10 or not all(isinstance(a, str) for a in answers):
        return Skipped(record_id, MALFORMED, f"{len(answers)} answers, VQAv2 has 10 per question: wrong annotations?")
    if ann.get("answer_type") not in ANSWER_TYPES:
        return Skipped(record_id, BAD_LABEL, f"answer_type {ann.get('answer_type')!r} not in {ANSWER_TYPES}")
    image_id = q.get("image_id")
    if isinstance(image_id, bool) or not isinstance(image_id, int):
        return Skipped(record_id, MALFORMED, f"image_id {image_id!r:.40} is not an integer COCO id")
    name = f"COCO_{subtype}_{image_id:012d}.jpg"
    return vqa_sample(record_id, ImageRef(images_dir / name, name), q.get("question"),
                      ann.get("multiple_choice_answer"),
                      {"question_id": q.get("question_id"), "answer_type": ann["answer_type"], "answers": answers})
