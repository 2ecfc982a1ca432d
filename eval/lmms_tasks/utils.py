"""lmms-eval task functions over our converted datasets, scored by `vlmr eval`'s scorers (vlmrecipes.eval).

    lmms-eval --include_path eval/lmms_tasks --tasks vlmr_vqa_rad,vlmr_slake,vlmr_pathvqa --model ... \\
        --model_args ... --output_path lmms_out

Run from the folder that holds `dataset_info/` (the repo root): each task reads the converted test split,
e.g. `dataset_info/vqa_rad/test.jsonl` (`vlmr convert vqa_rad ... --split test`), and its images relative to
`dataset_info/`, as LLaMA-Factory does. A doc is one ShareGPT record: the question is its user turn without
the `<image>` token, the target its assistant turn, and every other field (`answer_type`, `question_type`,
`modality`, ...) is the extra field `vlmr eval --dataset` would join. `process_results` returns the
prediction row; each aggregation scores all rows with the task's scorer and returns one of its metrics, so
the numbers are `vlmr eval`'s on the same answers (tests/test_lmms_tasks.py checks that).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from vlmrecipes.data_converters.schema import IMAGE_TOKEN
from vlmrecipes.eval.data import CONVERSATION_KEYS
from vlmrecipes.eval.metrics import EMOTION_LABEL_SETS
from vlmrecipes.eval.scoring import score_emotion, score_medvqa

DATASET_DIR = Path("dataset_info")  # LLaMA-Factory's dataset_dir: record image paths are relative to it


def _turn(doc: dict, role: str) -> str:
    return next(turn["content"] for turn in doc["messages"] if turn["role"] == role)


def doc_to_visual(doc: dict) -> list[Image.Image]:
    return [Image.open(DATASET_DIR / path).convert("RGB") for path in doc.get("images") or []]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """The record's question as the model was trained to read it, minus the image token (the model adds images)."""
    kwargs = lmms_eval_specific_kwargs or {}
    question = _turn(doc, "user").replace(IMAGE_TOKEN, "").strip()
    return f"{kwargs.get('pre_prompt', '')}{question}{kwargs.get('post_prompt', '')}"


def doc_to_target(doc: dict) -> str:
    return _turn(doc, "assistant")


def _row(doc: dict, results: list[str]) -> dict:
    """The prediction row `vlmr eval` scores: predict, label and the record's extra fields (nulls left out, as
    the JSON loader fills fields a record does not have)."""
    extra = {k: v for k, v in doc.items() if k not in CONVERSATION_KEYS and v is not None}
    return {**extra, "predict": results[0] if results else "", "label": doc_to_target(doc), "_line": doc.get("id", "?")}


# --- medical VQA: the four conventions of vlmr eval --task medvqa ------------------------------------------
MEDVQA_METRICS = ("llava_med.open_recall", "llava_med.closed_accuracy", "medevalkit.accuracy",
                  "medevalkit.open_exact_match", "medevalkit.closed_accuracy", "lmms_eval.accuracy",
                  "lmms_eval.open_accuracy", "lmms_eval.closed_accuracy", "strict.open_recall",
                  "strict.open_exact_match", "strict.closed_accuracy")


def medvqa_process_results(doc: dict, results: list[str]) -> dict[str, dict]:
    row = _row(doc, results)
    return {name.replace(".", "_"): row for name in MEDVQA_METRICS}


def _medvqa(metric: str):
    def aggregate(rows: list[dict]) -> float | None:
        return score_medvqa(rows).metrics[metric]

    aggregate.__name__ = f"aggregate_{metric.replace('.', '_')}"
    return aggregate


# lmms-eval names one aggregation function per metric in the task YAML (`!function utils.<name>`)
aggregate_llava_med_open_recall = _medvqa("llava_med.open_recall")
aggregate_llava_med_closed_accuracy = _medvqa("llava_med.closed_accuracy")
aggregate_medevalkit_accuracy = _medvqa("medevalkit.accuracy")
aggregate_medevalkit_open_exact_match = _medvqa("medevalkit.open_exact_match")
aggregate_medevalkit_closed_accuracy = _medvqa("medevalkit.closed_accuracy")
aggregate_lmms_eval_accuracy = _medvqa("lmms_eval.accuracy")
aggregate_lmms_eval_open_accuracy = _medvqa("lmms_eval.open_accuracy")
aggregate_lmms_eval_closed_accuracy = _medvqa("lmms_eval.closed_accuracy")
aggregate_strict_open_recall = _medvqa("strict.open_recall")
aggregate_strict_open_exact_match = _medvqa("strict.open_exact_match")
aggregate_strict_closed_accuracy = _medvqa("strict.closed_accuracy")


# --- facial expression: vlmr eval --task emotion --label-set ... ------------------------------------------
EMOTION_METRICS = ("accuracy", "macro_f1", "weighted_f1", "unmapped_rate")


def emotion_process_results(doc: dict, results: list[str]) -> dict[str, dict]:
    row = _row(doc, results)
    return {name: row for name in EMOTION_METRICS}


def _emotion(label_set: str, metric: str):
    def aggregate(rows: list[dict]) -> float:
        return score_emotion(rows, EMOTION_LABEL_SETS[label_set].labels).metrics[metric]

    aggregate.__name__ = f"aggregate_{label_set}_{metric}"
    return aggregate


aggregate_affectnet8_accuracy = _emotion("affectnet8", "accuracy")
aggregate_affectnet8_macro_f1 = _emotion("affectnet8", "macro_f1")
aggregate_affectnet8_weighted_f1 = _emotion("affectnet8", "weighted_f1")
aggregate_affectnet8_unmapped_rate = _emotion("affectnet8", "unmapped_rate")
aggregate_fer2013_accuracy = _emotion("fer2013", "accuracy")
aggregate_fer2013_macro_f1 = _emotion("fer2013", "macro_f1")
aggregate_fer2013_weighted_f1 = _emotion("fer2013", "weighted_f1")
aggregate_fer2013_unmapped_rate = _emotion("fer2013", "unmapped_rate")
