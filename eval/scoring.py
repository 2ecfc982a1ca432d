"""Task scorers: prediction rows in, numbers out. No scorer reads or writes a file.

A row is one prediction: `predict` (the model's text), `label` (the reference answer), `_line` (and `_file`
when it comes from a predictions file) plus the dataset's extra fields (VQAv2's `answers`, `answer_type`, an
emotion `label`...). Metric definitions are in `vlmrecipes.eval.metrics`; tables, plots and report files are
drawn from a `TaskResult` by `vlmrecipes.eval.report` and `vlmrecipes.eval.plots`, so a benchmark, a training
callback or a harness can score without leaving files behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from vlmrecipes.eval import metrics as M


@dataclass
class Confusion:
    """Gold and predicted class of each scored row, and the classes in axis order (UNMAPPED last if any)."""

    gold: list[str]
    predicted: list[str]
    classes: list[str]


@dataclass
class TaskResult:
    """`metrics`: the headline numbers (compared across runs, plotted); `details`: breakdowns;
    `scores`: one score per prediction row (None where a row is not scored, e.g. a duplicate caption);
    `notes`: caveats shown in the report; `confusion`: a classification task's classes per row."""

    metrics: dict[str, float | None]
    details: dict[str, Any] = field(default_factory=dict)
    scores: list[float | None] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    confusion: Confusion | None = None


def _by_group(scores: Sequence[float], groups: Sequence[str]) -> dict[str, dict[str, float | int | None]]:
    out: dict[str, list[float]] = {}
    for score, group in zip(scores, groups):
        out.setdefault(group, []).append(score)
    return {g: {"score": M.mean(v), "count": len(v)} for g, v in sorted(out.items())}


def score_vqa(rows: list[dict]) -> TaskResult:
    answers = [r["answers"] if isinstance(r.get("answers"), list) and r["answers"] else [r["label"]] for r in rows]
    acc = [M.vqa_accuracy(r["predict"], a) for r, a in zip(rows, answers)]
    em = [M.exact_match(r["predict"], r["label"]) for r in rows]
    anls = [M.anls(r["predict"], a) for r, a in zip(rows, answers)]
    groups = [str(r.get("answer_type") or "all") for r in rows]
    result = TaskResult({"vqa_accuracy": M.mean(acc), "exact_match": M.mean(em), "anls": M.mean(anls)},
                        {"vqa_accuracy_by_answer_type": _by_group(acc, groups)}, acc)
    if not any(isinstance(r.get("answers"), list) for r in rows):
        result.notes.append("no `answers` field: VQA accuracy used the label as the only human answer "
                            "(pass --dataset with the converted VQAv2 file for the 10-answer metric)")
    return result


def score_caption(rows: list[dict]) -> TaskResult:
    # One prediction per image: rows sharing an image_id (COCO's five captions give five records) pool their
    # labels as references and the first row's prediction is scored.
    keys = [str(r["image_id"]) if "image_id" in r else f"row{i}" for i, r in enumerate(rows)]
    pooled: dict[str, list[str]] = {}
    for key, row in zip(keys, rows):
        pooled.setdefault(key, []).append(row["label"])
    first = {key: i for i, key in reversed(list(enumerate(keys)))}
    scored = sorted(first.values())
    refs = [rows[i]["references"] if isinstance(rows[i].get("references"), list) else pooled[keys[i]]
            for i in scored]
    scores = M.caption_scores([rows[i]["predict"] for i in scored], refs)
    per_row: list[float | None] = [None] * len(rows)
    for i, cider in zip(scored, scores["cider_each"]):
        per_row[i] = cider
    result = TaskResult({k: scores[k] for k in ("bleu4", "rouge_l", "cider")}, {"images": len(scored)}, per_row)
    if len(scored) < 10:
        result.notes.append(f"only {len(scored)} images: CIDEr's IDF is estimated from these references and is "
                            "unreliable on so few")
    return result


def score_medvqa(rows: list[dict]) -> TaskResult:
    kinds = []
    for r in rows:
        kind = str(r.get("answer_type") or "").strip().lower()
        if kind not in ("closed", "open"):
            kind = "closed" if r["label"].strip().lower().strip(".") in M.YES_NO else "open"
        kinds.append(kind)
    scores = [M.medvqa_closed(r["predict"], r["label"]) if k == "closed" else M.medvqa_open_recall(r["predict"], r["label"])
              for r, k in zip(rows, kinds)]
    closed = [s for s, k in zip(scores, kinds) if k == "closed"]
    open_ = [s for s, k in zip(scores, kinds) if k == "open"]
    open_em = [M.exact_match(r["predict"], r["label"]) for r, k in zip(rows, kinds) if k == "open"]
    return TaskResult({"closed_accuracy": M.mean(closed), "open_recall": M.mean(open_),
                       "open_exact_match": M.mean(open_em)},
                      {"closed_count": len(closed), "open_count": len(open_)}, scores)


def _classification(rows: list[dict], gold: list[str], predicted: list[str | None],
                    labels: Sequence[str]) -> TaskResult:
    unmapped = sum(p is None for p in predicted)
    pred = [p if p is not None else M.UNMAPPED for p in predicted]
    scores = M.classification_scores(gold, pred, labels)
    return TaskResult({"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"],
                       "unmapped_rate": unmapped / len(rows)},
                      {"labels": list(labels), "unmapped": unmapped, "per_class": scores["per_class"],
                       "gold_counts": M.count(gold), "predicted_counts": M.count(pred)},
                      [float(g == p) for g, p in zip(gold, pred)],
                      confusion=Confusion(gold, pred, list(labels) + ([M.UNMAPPED] if unmapped else [])))


def _where(row: dict) -> str:
    """FILE:LINE of a prediction row (`vlmr bench` scores rows that know only their dataset line)."""
    return f"{row['_file']}:{row['_line']}" if "_file" in row else f"dataset line {row['_line']}"


def score_emotion(rows: list[dict], labels: Sequence[str] | None = None) -> TaskResult:
    # the dataset's `label` extra field and LLaMA-Factory's `label` (the reference answer) are the same text
    if labels:
        labels = list(labels)
        gold = [M.map_label(r["label"], labels) for r in rows]
        problem = f"is not one of --labels {', '.join(labels)}; add it to --labels or fix the dataset"
    else:  # the classes of the gold labels, normalised as predictions are ("Happy", "HAPPY." -> "happy")
        classes = M.gold_classes([r["label"] for r in rows])
        gold = [classes[r["label"]] or None for r in rows]
        labels = sorted(set(classes.values()) - {""})
        problem = "has no words; fix the dataset's label"
    for r, g in zip(rows, gold):
        if g is None:
            raise ValueError(f"{_where(r)}: gold label {r['label']!r} {problem}")
    return _classification(rows, gold, [M.map_label(r["predict"], labels) for r in rows], labels)


def score_choice(rows: list[dict], letters: Sequence[str] | None = None) -> TaskResult:
    letters = "".join(letters) if letters else "ABCDEFGHIJ"
    gold, predicted = [], []
    for r in rows:
        options = r.get("options") if isinstance(r.get("options"), list) else None
        answer = r.get("answer") if isinstance(r.get("answer"), str) else r["label"]
        g = M.extract_choice(answer, letters, options)
        if g is None:
            raise ValueError(f"{_where(r)}: no option letter ({letters}) in the gold answer "
                             f"{answer!r}; multiple-choice labels must name a letter")
        gold.append(g)
        predicted.append(M.extract_choice(r["predict"], letters, options))
    return _classification(rows, gold, predicted, sorted(set(gold) | {p for p in predicted if p}))
