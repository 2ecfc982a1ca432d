"""`vlmr eval PREDICTIONS --task TASK`: task metrics of generated predictions -> report.json, report.md, PNGs.

    vlmr eval saves/x/predict/generated_predictions.jsonl --task vqa --dataset vqav2_val --out reports/x
    vlmr eval --compare reports/base reports/finetuned --out reports/compare

PREDICTIONS is LLaMA-Factory's `generated_predictions.jsonl` (prompt/predict/label) or any JSONL with those
fields plus a dataset's extra fields. `--dataset FILE_OR_NAME` joins the extra fields of the predicted
dataset by line order (LLaMA-Factory keeps only prompt/predict/label), e.g. VQAv2's ten `answers`,
`answer_type` for medvqa, `label` for emotion, `references` for captions. Without them the label alone is the
reference. Tasks and what they read (metric definitions in `vlmrecipes.eval.metrics`):

- vqa: VQAv2 accuracy over `answers` (else the label), exact match, ANLS; split by `answer_type`.
- caption: BLEU-4, ROUGE-L, CIDEr-D against `references` (else all labels of the same `image_id`, else the
  label); Chinese through jieba.
- medvqa: LLaVA-Med closed accuracy and open recall (token-level), split by `answer_type` (closed/open;
  missing -> yes/no answers are closed).
- emotion: accuracy, macro-F1, per-class precision/recall, confusion matrix; labels from `--labels` or the
  gold `label`s, normalised as answers are (case, punctuation, synonyms: "Happy", "HAPPY." and "Happiness"
  are one class); unmapped answers counted.
- choice: option-letter accuracy (letters extracted from answer and label; `options` used when present).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from vlmrecipes.eval import metrics as M
from vlmrecipes.eval.data import join_dataset, load_predictions

TASKS = ("vqa", "caption", "medvqa", "emotion", "choice")
# metrics on their own scale; everything else is a fraction shown as a percentage
RAW_SCALE = frozenset({"cider", "count"})


@dataclass
class TaskResult:
    """`metrics`: the headline numbers (compared across runs, plotted); `details`: breakdowns;
    `scores`: one score per prediction row (None where a row is not scored, e.g. a duplicate caption);
    `plots`: PNG file names written next to the report; `notes`: caveats shown in the report."""

    metrics: dict[str, float | None]
    details: dict[str, Any] = field(default_factory=dict)
    scores: list[float | None] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _by_group(scores: Sequence[float], groups: Sequence[str]) -> dict[str, dict[str, float | int | None]]:
    out: dict[str, list[float]] = {}
    for score, group in zip(scores, groups):
        out.setdefault(group, []).append(score)
    return {g: {"score": M.mean(v), "count": len(v)} for g, v in sorted(out.items())}


def score_vqa(rows: list[dict], out: Path, labels: Sequence[str] | None) -> TaskResult:
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
    by_type = {g: v["score"] for g, v in result.details["vqa_accuracy_by_answer_type"].items()}
    result.plots.append(_bars(by_type, out / "vqa_by_answer_type.png", "VQA accuracy by answer type"))
    return result


def _bars(values: dict[str, float | None], path: Path, title: str) -> str:
    from vlmrecipes.eval.plots import bar_chart

    return bar_chart({k: v or 0.0 for k, v in values.items()}, path, title).name


def score_caption(rows: list[dict], out: Path, labels: Sequence[str] | None) -> TaskResult:
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
    result.plots.append(_bars(result.metrics, out / "caption_metrics.png", "Caption metrics"))
    return result


def score_medvqa(rows: list[dict], out: Path, labels: Sequence[str] | None) -> TaskResult:
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
    result = TaskResult({"closed_accuracy": M.mean(closed), "open_recall": M.mean(open_),
                         "open_exact_match": M.mean(open_em)},
                        {"closed_count": len(closed), "open_count": len(open_)}, scores)
    result.plots.append(_bars(result.metrics, out / "medvqa_metrics.png", "Medical VQA (LLaVA-Med scoring)"))
    return result


def _classification(rows: list[dict], out: Path, gold: list[str], predicted: list[str | None],
                    labels: Sequence[str], name: str) -> TaskResult:
    from vlmrecipes.eval.plots import confusion_png

    unmapped = sum(p is None for p in predicted)
    pred = [p if p is not None else M.UNMAPPED for p in predicted]
    scores = M.classification_scores(gold, pred, labels)
    axis = list(labels) + ([M.UNMAPPED] if unmapped else [])
    result = TaskResult({"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"],
                         "unmapped_rate": unmapped / len(rows)},
                        {"labels": list(labels), "unmapped": unmapped, "per_class": scores["per_class"],
                         "gold_counts": M.count(gold), "predicted_counts": M.count(pred)},
                        [float(g == p) for g, p in zip(gold, pred)])
    result.plots.append(confusion_png(gold, pred, axis, out / f"{name}_confusion.png", f"{name}: gold vs predicted").name)
    per_class_recall = {label: v["recall"] for label, v in scores["per_class"].items()}
    result.plots.append(_bars(per_class_recall, out / f"{name}_recall.png", f"{name}: recall per class"))
    return result


def _where(row: dict) -> str:
    """FILE:LINE of a prediction row (`vlmr bench` scores rows that know only their dataset line)."""
    return f"{row['_file']}:{row['_line']}" if "_file" in row else f"dataset line {row['_line']}"


def score_emotion(rows: list[dict], out: Path, labels: Sequence[str] | None) -> TaskResult:
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
    return _classification(rows, out, gold, [M.map_label(r["predict"], labels) for r in rows], labels, "emotion")


def score_choice(rows: list[dict], out: Path, labels: Sequence[str] | None) -> TaskResult:
    letters = "".join(labels) if labels else "ABCDEFGHIJ"
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
    used = sorted(set(gold) | {p for p in predicted if p})
    return _classification(rows, out, gold, predicted, used, "choice")


SCORERS: dict[str, Callable[[list[dict], Path, Sequence[str] | None], TaskResult]] = {
    "vqa": score_vqa, "caption": score_caption, "medvqa": score_medvqa, "emotion": score_emotion,
    "choice": score_choice,
}


def _fmt(name: str, value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and name.split(".")[-1] not in RAW_SCALE:
        return f"{100 * value:.1f}%"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _markdown(report: dict, rows: list[dict], result: TaskResult) -> str:
    lines = [f"# {report['task']} evaluation: {report['name']}", "",
             f"Predictions: `{report['predictions']}` ({report['count']} rows)"
             + (f", extra fields from `{report['dataset']}`" if report.get("dataset") else ""), "",
             "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {_fmt(k, v)} |" for k, v in report["metrics"].items()]
    for note in report["notes"]:
        lines += ["", f"> note: {note}"]
    for key, value in report["details"].items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            columns = list(next(iter(value.values())))
            lines += ["", f"## {key}", "", "| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
            lines += [f"| {k} | " + " | ".join(_fmt(c, v.get(c)) for c in columns) + " |" for k, v in value.items()]
    lines += ["", *[f"![{p}]({p})" for p in report["plots"]]]
    misses = [(s, r) for s, r in zip(result.scores, rows) if s is not None and s < 0.5][:5]
    if misses:
        lines += ["", "## Examples scored below 50%", "", "| line | predict | label |", "| --- | --- | --- |"]
        lines += [f"| {r['_line']} | {_cell(r['predict'])} | {_cell(r['label'])} |" for _, r in misses]
    return "\n".join(lines) + "\n"


def _cell(text: str, width: int = 80) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= width else text[:width - 1] + "…"


def evaluate(predictions: Path, task: str, out: Path, labels: Sequence[str] | None = None,
             dataset: str | None = None, name: str | None = None) -> dict:
    """Score `predictions` for `task`; write report.json, report.md, scores.jsonl and the plots under `out`."""
    if task not in SCORERS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    rows = load_predictions(predictions)
    notes = []
    if dataset:
        mismatched = join_dataset(rows, dataset)
        if mismatched:
            notes.append(f"{mismatched} of {len(rows)} labels differ from the --dataset answers on the same line: "
                         "check that it is the file that was predicted, in the same order")
    out.mkdir(parents=True, exist_ok=True)
    result = SCORERS[task](rows, out, labels)
    report = {"task": task, "name": name or predictions.resolve().parent.name,
              "predictions": str(predictions), "dataset": str(dataset) if dataset else None, "count": len(rows),
              "metrics": result.metrics, "details": result.details, "notes": notes + result.notes,
              "plots": result.plots}
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out / "report.md").write_text(_markdown(report, rows, result))
    with open(out / "scores.jsonl", "w", encoding="utf-8") as f:
        for row, score in zip(rows, result.scores):
            f.write(json.dumps({"line": row["_line"], "score": score, "predict": row["predict"],
                                "label": row["label"]}, ensure_ascii=False) + "\n")
    return report


def compare(inputs: Sequence[Path], out: Path, task: str | None = None, names: Sequence[str] | None = None,
            labels: Sequence[str] | None = None) -> dict:
    """Runs side by side. Each input is a report folder, a report.json, or a predictions JSONL (scored here
    with `task` into `out/<name>/`). Deltas are against the first run."""
    if names and len(names) != len(inputs):
        raise ValueError(f"{len(names)} --names for {len(inputs)} runs")
    reports = []
    for i, path in enumerate(inputs):
        name = names[i] if names else None
        if path.is_dir():
            path = path / "report.json"
        if path.suffix == ".jsonl":
            if not task:
                raise ValueError(f"{path}: comparing prediction files needs --task")
            run_name = name or f"{i}_{path.parent.name or path.stem}"
            reports.append(evaluate(path, task, out / run_name, labels, name=run_name))
            continue
        if not path.exists():
            raise FileNotFoundError(f"{path}: no report; run `vlmr eval PREDICTIONS --task ... --out DIR` first")
        report = json.loads(path.read_text())
        report["name"] = name or report["name"]
        reports.append(report)
    tasks = {r["task"] for r in reports}
    if len(tasks) > 1:
        raise ValueError(f"cannot compare different tasks: {', '.join(sorted(tasks))}")
    runs = [r["name"] for r in reports]
    if len(set(runs)) != len(runs):
        runs = [f"{i}_{n}" for i, n in enumerate(runs)]
    table = {run: r["metrics"] for run, r in zip(runs, reports)}
    out.mkdir(parents=True, exist_ok=True)
    from vlmrecipes.eval.plots import grouped_bars

    grouped_bars({run: {k: v or 0.0 for k, v in m.items()} for run, m in table.items()}, out / "compare.png",
                 f"{tasks.pop()}: " + " vs ".join(runs))
    metric_names = list(dict.fromkeys(k for m in table.values() for k in m))
    lines = ["# Comparison", "", "| metric | " + " | ".join(runs) + " |", "|---" * (len(runs) + 1) + "|"]
    for metric in metric_names:
        base = table[runs[0]].get(metric)
        cells = [_fmt(metric, table[runs[0]].get(metric))]
        for run in runs[1:]:
            value = table[run].get(metric)
            delta = "" if value is None or base is None else f" ({'+' if value >= base else ''}{_fmt(metric, value - base)})"
            cells.append(_fmt(metric, value) + delta)
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    lines += ["", "![compare.png](compare.png)", ""]
    (out / "compare.md").write_text("\n".join(lines))
    result = {"runs": runs, "metrics": table, "count": {run: r["count"] for run, r in zip(runs, reports)}}
    (out / "compare.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = __doc__.split("\n\n", 2)[2]
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("predictions", nargs="?", type=Path, help="generated_predictions.jsonl")
    parser.add_argument("--task", choices=TASKS)
    parser.add_argument("--out", type=Path, help="report folder (default: eval_<task> next to the predictions)")
    parser.add_argument("--dataset", help="the predicted dataset (JSONL or dataset_info name): extra fields by line")
    parser.add_argument("--labels", nargs="+", help="emotion: the label set; choice: the option letters")
    parser.add_argument("--name", help="run name shown in the report (default: the predictions' folder)")
    parser.add_argument("--compare", nargs="+", type=Path, metavar="RUN",
                        help="report folders/report.json files (or prediction files with --task) side by side")
    parser.add_argument("--names", nargs="+", help="with --compare: one name per run")


def run(args: argparse.Namespace) -> int:
    try:
        if args.compare:
            out = args.out or Path("eval_compare")
            compare(args.compare, out, args.task, args.names, args.labels)
            print((out / "compare.md").read_text())
            return 0
        if not args.predictions or not args.task:
            print("vlmr eval: give PREDICTIONS and --task, or --compare RUN RUN...", file=sys.stderr)
            return 2
        out = args.out or args.predictions.parent / f"eval_{args.task}"
        report = evaluate(args.predictions, args.task, out, args.labels, args.dataset, args.name)
    except (ValueError, OSError) as e:  # bad input (file:line and the fix), missing or unreadable file
        print(f"vlmr eval: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report["metrics"], indent=2))
    print(f"report: {out / 'report.md'}")
    return 0
