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

from vlmrecipes.eval import medvqa as MV
from vlmrecipes.eval import metrics as M

# metrics on their own scale (CIDEr, counts); every other metric is a rate in [0, 1], shown as a percentage
RAW_SCALE = frozenset({"cider", "count"})


def is_rate(metric: str) -> bool:
    """Whether `metric` ("accuracy", "llava_med.open_recall", "cider"...) is a rate in [0, 1]."""
    return metric.split(".")[-1] not in RAW_SCALE


@dataclass
class Confusion:
    """Gold and predicted class of each scored row, and the classes in axis order.

    A gold label is always one of `classes`; an answer that names none of them is predicted UNMAPPED, which is a
    column of the matrix (`columns`, only when some answer was unmapped) and never a row.
    """

    gold: list[str]
    predicted: list[str]
    classes: list[str]

    @property
    def columns(self) -> list[str]:
        """The predicted classes: `classes`, then UNMAPPED when some answer was unmapped."""
        return self.classes + ([M.UNMAPPED] if M.UNMAPPED in self.predicted else [])

    def counts(self) -> list[list[int]]:
        """How many rows of each gold class (row, in `classes` order) got each prediction (column, `columns`)."""
        row, column = {c: i for i, c in enumerate(self.classes)}, {c: j for j, c in enumerate(self.columns)}
        matrix = [[0] * len(column) for _ in row]
        for gold, predicted in zip(self.gold, self.predicted):
            matrix[row[gold]][column[predicted]] += 1
        return matrix


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


def _members(groups: Sequence[str]) -> dict[str, list[int]]:
    """The row indices of each group, groups sorted."""
    out: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        out.setdefault(group, []).append(i)
    return dict(sorted(out.items()))


def _by_group(scores: Sequence[float], groups: Sequence[str]) -> dict[str, dict[str, float | int | None]]:
    return {g: {"score": M.mean(scores[i] for i in rows), "count": len(rows)} for g, rows in _members(groups).items()}


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


# fields a medical VQA dataset carries that a report breaks scores down by (VQA-RAD question_type; SLAKE
# modality, content_type, q_lang; every converted set answer_type, PathVQA's being yes/no -> closed)
MEDVQA_BREAKDOWNS = ("answer_type", "question_type", "modality", "content_type", "q_lang")


def _answer_kind(row: dict) -> str:
    kind = str(row.get("answer_type") or "").strip().lower()
    if kind in ("closed", "open"):
        return kind
    return "closed" if row["label"].strip().lower().strip(".") in MV.YES_NO else "open"


def score_medvqa(rows: list[dict]) -> TaskResult:
    """The three published conventions and our strict one side by side (definitions in eval/medvqa.py).

    Open/closed comes from `answer_type` (closed/open; missing -> yes/no answers are closed), except for
    MedEvalKit, which decides it per dataset as its own code does. LLaVA-Med's closed misses that its script
    leaves uncounted are counted as misses here; a note gives the number its script would print.
    """
    kinds = [_answer_kind(r) for r in rows]
    llava_closed = {i: MV.llava_med_closed(r["predict"], r["label"]) for i, (r, k) in enumerate(zip(rows, kinds))
                    if k == "closed"}
    per_row: dict[str, list[float]] = {"llava_med": [], "medevalkit": [], "lmms_eval": [], "strict": []}
    medevalkit_kinds = []
    for i, (r, kind) in enumerate(zip(rows, kinds)):
        if kind == "closed":
            per_row["llava_med"].append(llava_closed[i] or 0.0)
            per_row["strict"].append(MV.strict_closed(r["predict"], r["label"]))
        else:
            per_row["llava_med"].append(MV.llava_med_open_recall(r["predict"], r["label"]))
            per_row["strict"].append(MV.strict_open_recall(r["predict"], r["label"]))
        mek_kind, hit = MV.medevalkit_score(r["predict"], r["label"], kind, MV.benchmark_of(r))
        medevalkit_kinds.append(mek_kind)
        per_row["medevalkit"].append(hit)
        per_row["lmms_eval"].append(MV.lmms_eval_exact(r["predict"], r["label"]))
    strict_em = [MV.strict_open_exact(r["predict"], r["label"]) for r, k in zip(rows, kinds) if k == "open"]

    def part(name: str, kind: str, row_kinds: Sequence[str] = kinds) -> float | None:
        return M.mean(s for s, k in zip(per_row[name], row_kinds) if k == kind)

    metrics = {
        "llava_med.open_recall": part("llava_med", "open"),
        "llava_med.closed_accuracy": part("llava_med", "closed"),
        "medevalkit.accuracy": M.mean(per_row["medevalkit"]),
        "medevalkit.open_exact_match": part("medevalkit", "open", medevalkit_kinds),
        "medevalkit.closed_accuracy": part("medevalkit", "closed", medevalkit_kinds),
        "lmms_eval.accuracy": M.mean(per_row["lmms_eval"]),
        "lmms_eval.open_accuracy": part("lmms_eval", "open"),
        "lmms_eval.closed_accuracy": part("lmms_eval", "closed"),
        "strict.open_recall": part("strict", "open"),
        "strict.open_exact_match": M.mean(strict_em),
        "strict.closed_accuracy": part("strict", "closed"),
    }
    conventions = {}
    for name, convention in MV.CONVENTIONS.items():
        row_kinds = medevalkit_kinds if name == "medevalkit" else kinds
        conventions[convention.title] = {
            "open": part(name, "open", row_kinds), "closed": part(name, "closed", row_kinds),
            "all": M.mean(per_row[name]), "open_count": row_kinds.count("open"),
            "closed_count": row_kinds.count("closed"), "open_metric": convention.open,
            "closed_metric": convention.closed, "source": convention.source}
    details: dict[str, Any] = {"conventions": conventions}
    for field_name in MEDVQA_BREAKDOWNS:
        if field_name == "answer_type":
            groups = kinds
        elif any(r.get(field_name) not in (None, "") for r in rows):
            groups = [str(r.get(field_name) or "unknown").strip() for r in rows]
        else:
            continue
        details[f"by_{field_name}"] = {
            group: {"count": len(members), **{MV.CONVENTIONS[name].title: M.mean(per_row[name][i] for i in members)
                                              for name in per_row}}
            for group, members in _members(groups).items()}
    result = TaskResult(metrics, details, per_row["strict"])
    uncounted = sum(v is None for v in llava_closed.values())
    if uncounted:
        as_printed = M.mean(v for v in llava_closed.values() if v is not None)
        result.notes.append(
            f"LLaVA-Med closed accuracy counts {uncounted} misses whose reply contains \"yes\"/\"no\" as a substring; "
            f"its own run_eval.py leaves them out and would print {_percent(as_printed)}")
    if "slake" in {MV.benchmark_of(r) for r in rows}:
        result.notes.append("MedEvalKit: SLAKE rules applied (rows carry SLAKE's q_lang/content_type): open/closed "
                            "from answer_type, closed non-yes/no answers by exact match; its SLAKE number also "
                            "includes the Chinese questions (convert with --lang all to match it)")
    return result


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _classification(rows: list[dict], gold: list[str], predicted: list[str | None],
                    labels: Sequence[str]) -> TaskResult:
    unmapped = sum(p is None for p in predicted)
    pred = [p if p is not None else M.UNMAPPED for p in predicted]
    scores = M.classification_scores(gold, pred, labels)
    return TaskResult({"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"],
                       "weighted_f1": scores["weighted_f1"], "unmapped_rate": unmapped / len(rows)},
                      {"labels": list(labels), "unmapped": unmapped, "per_class": scores["per_class"],
                       "gold_counts": M.count(gold), "predicted_counts": M.count(pred)},
                      [float(g == p) for g, p in zip(gold, pred)],
                      confusion=Confusion(gold, pred, list(labels)))


def _where(row: dict) -> str:
    """FILE:LINE of a prediction row (`vlmr bench` scores rows that know only their dataset line)."""
    return f"{row['_file']}:{row['_line']}" if "_file" in row else f"dataset line {row['_line']}"


def score_emotion(rows: list[dict], labels: Sequence[str] | None = None) -> TaskResult:
    """Classes from `labels`, else those the converted question in every row's `prompt` offers (all of the set,
    those no row has included), else the gold labels' own classes."""
    # the dataset's `label` extra field and LLaMA-Factory's `label` (the reference answer) are the same text
    offered = None if labels else M.offered_classes([str(r.get("prompt", "")) for r in rows])
    if offered and all(M.map_label(r["label"], offered) for r in rows):
        labels = offered
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
    result = _classification(rows, gold, [M.map_label(r["predict"], labels) for r in rows], labels)
    label_set = M.label_set_of(labels)
    result.details["label_set"] = label_set.title if label_set else None
    result.notes.append((f"label set: {label_set.title} ({label_set.source})" if label_set else
                         f"label set: {len(labels)} classes ({', '.join(labels)}), none of the published sets "
                         f"({', '.join(s.title for s in M.EMOTION_LABEL_SETS.values())}); --label-set names one")
                        + ("; the classes the questions offer" if labels == offered else ""))
    return result


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
