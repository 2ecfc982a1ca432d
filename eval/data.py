"""Reading predictions and ShareGPT datasets for the evaluators, the BLIP baseline and the benchmark.

Predictions are LLaMA-Factory's `generated_predictions.jsonl` (`{"prompt", "predict", "label"}` per line, in
the order of the predicted dataset) or any JSONL with those fields plus a dataset's extra fields. LLaMA-Factory
does not copy extra fields (VQAv2's `answers`, `answer_type`, an emotion `label`...) into its prediction file,
so `join_dataset` adds them back from the dataset JSONL by line order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmrecipes.data_converters.datasets import DatasetError, json_type, read_jsonl, resolve
from vlmrecipes.paths import DATASET_DIR

# ShareGPT keys that describe the conversation, not the sample; every other key is an extra field.
CONVERSATION_KEYS = frozenset({"messages", "conversations", "images", "videos", "audios", "system", "tools"})


def load_predictions(path: Path) -> list[dict[str, Any]]:
    """Prediction rows with `_file` and `_line` (where they are) added; each must carry string `predict` and
    `label`."""
    rows = []
    for lineno, row in read_jsonl(path):
        for key in ("predict", "label"):
            if key not in row:
                raise ValueError(f"{path}:{lineno}: no {key!r} field; is this a generated_predictions.jsonl "
                                 "(prompt/predict/label per line)?")
            if not isinstance(row[key], str):
                raise ValueError(f"{path}:{lineno}: {key!r} is a JSON {json_type(row[key])} "
                                 f"({json.dumps(row[key])[:40]}), not a string; write the answer as text, "
                                 f"e.g. {json.dumps(str(row[key]))[:40]}")
        rows.append({**row, "_file": str(path), "_line": lineno})
    if not rows:
        raise ValueError(f"{path}: no predictions")
    return rows


@dataclass
class Example:
    """One evaluation sample of a ShareGPT record: the first user turn, the first answer, images, extras."""

    line: int
    prompt: str
    answer: str
    images: list[Path]
    extra: dict[str, Any]


def image_path(name: str, roots: list[Path]) -> Path:
    for root in roots:
        if (root / name).exists():
            return root / name
    return roots[0] / name if not Path(name).is_absolute() else Path(name)


def load_examples(name_or_file: str | Path, dataset_dir: Path = DATASET_DIR) -> list[Example]:
    """Every record of a ShareGPT dataset (LLaMA-Factory's `messages` or LLaVA's `conversations` layout).

    LLaMA-Factory resolves a record's image paths against `dataset_dir`, so for a registered name that folder
    comes first; for a file given directly, its own folder and then `dataset_dir` are tried (`image_path`).
    """
    dataset = resolve(name_or_file, dataset_dir)
    path = dataset.path
    root = dataset_dir if dataset.name else path.parent
    roots = list(dict.fromkeys([root, path.parent, dataset_dir]))
    examples = []
    for lineno, record in read_jsonl(path):
        turns = record.get("messages") or record.get("conversations")
        if not isinstance(turns, list):
            raise DatasetError(f"{path}:{lineno}", "no `messages` list", "is this a ShareGPT dataset?")
        texts = {}
        for turn in turns:
            if not isinstance(turn, dict):
                raise DatasetError(f"{path}:{lineno}", f"a turn is a JSON {json_type(turn)}",
                                   "each turn must be an object with role/content (or from/value)")
            role = turn.get("role") or turn.get("from")
            role = {"human": "user", "gpt": "assistant"}.get(role, role)
            texts.setdefault(role, turn.get("content") if "content" in turn else turn.get("value"))
        if not isinstance(texts.get("user"), str) or not texts["user"] or not isinstance(texts.get("assistant"), str):
            raise DatasetError(f"{path}:{lineno}", "needs a user turn and an assistant turn with text content",
                               f"run `vlmr validate {path}` to check the dataset")
        images = [image_path(str(i), roots) for i in record.get("images") or []]
        extra = {k: v for k, v in record.items() if k not in CONVERSATION_KEYS}
        examples.append(Example(lineno, texts["user"], texts["assistant"], images, extra))
    if not examples:
        raise DatasetError(str(path), "no records", "predict or benchmark a converted dataset")
    return examples


def join_dataset(rows: list[dict[str, Any]], dataset: str | Path, dataset_dir: Path = DATASET_DIR) -> int:
    """Add the dataset's extra fields to the prediction rows, line i to line i (in place).

    LLaMA-Factory predicts the eval dataset in file order, one row per record, so order is the join key.
    Counts must agree; returns how many rows' `label` differs from the record's answer (a sign of the wrong
    file or a shuffled one; the report shows it). Fields already in a row are kept; a row without a `prompt`
    gets the record's question (whose choices name a classification's label set).
    """
    examples = load_examples(dataset, dataset_dir)
    if len(examples) != len(rows):
        raise ValueError(f"{dataset}: {len(examples)} records for {len(rows)} predictions; --dataset must be the "
                         "exact eval file that was predicted (same records, same order, no max_samples cut)")
    mismatched = 0
    for row, example in zip(rows, examples):
        for key, value in {**example.extra, "prompt": example.prompt}.items():
            row.setdefault(key, value)
        mismatched += " ".join(row["label"].split()) != " ".join(example.answer.split())
    return mismatched
