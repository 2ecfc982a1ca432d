"""`vlmr eval PREDICTIONS --task TASK`: task metrics of generated predictions -> report.json, report.md, PNGs.

    vlmr eval saves/x/predict/generated_predictions.jsonl --task vqa --dataset vqav2_validation --out reports/x
    vlmr eval --compare reports/base reports/finetuned --out reports/compare

PREDICTIONS is LLaMA-Factory's `generated_predictions.jsonl` (prompt/predict/label) or any JSONL with those
fields plus a dataset's extra fields. `--dataset FILE_OR_NAME` joins the extra fields of the predicted
dataset by line order (LLaMA-Factory keeps only prompt/predict/label), e.g. VQAv2's ten `answers`,
`answer_type` for medvqa, `label` for emotion, `references` for captions. Without them the label alone is the
reference. Tasks and what they read (metric definitions in `vlmrecipes.eval.metrics`):
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from tabulate import tabulate

from vlmrecipes.eval.data import join_dataset, load_predictions
from vlmrecipes.eval.metrics import EMOTION_LABEL_SETS
from vlmrecipes.eval.plots import grouped_bars
from vlmrecipes.eval.scoring import TaskResult, is_rate
from vlmrecipes.eval.tasks import TASKS, help_lines, labels_help

# This module is the rendering step: the numbers come from the task's pure scorer (`vlmrecipes.eval.tasks`);
# here they become report.json, report.md (tables by `tabulate`), scores.jsonl and the task's PNGs.

# The folder LLaMA-Factory's predict recipes write to (`output_dir: saves/<task>/<model>_<method>/predict`): it
# names no run, its parent (the trained model's output_dir) does.
PREDICT_FOLDER = "predict"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A GitHub Markdown table, cells as given (no number re-formatting)."""
    return tabulate(rows, headers, tablefmt="pipe", disable_numparse=True).splitlines()


def _fmt(name: str, value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and is_rate(name):
        return f"{100 * value:.1f}%"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _difference(name: str, value: float, base: float) -> str:
    """`value - base` signed: percentage points for a rate ("+75.0 pp": 10% -> 85%, not 75% more), else in the
    metric's own unit."""
    delta = value - base
    return f"{delta * 100:+.1f} pp" if is_rate(name) else f"{delta:+.3f}"


def run_name(predictions: Path) -> str:
    """The default run name of a predictions file: its folder's name, or the folder above a `predict` folder
    (saves/emotion/qwen3_vl_4b_lora/predict/generated_predictions.jsonl -> qwen3_vl_4b_lora)."""
    folder = predictions.resolve().parent
    return folder.parent.name if folder.name == PREDICT_FOLDER and folder.parent.name else folder.name


def _markdown(report: dict, rows: list[dict], result: TaskResult) -> str:
    lines = [f"# {report['task']} evaluation: {report['name']}", "",
             f"Predictions: `{report['predictions']}` ({report['count']} rows)"
             + (f", extra fields from `{report['dataset']}`" if report.get("dataset") else ""), ""]
    lines += markdown_table(["metric", "value"], [(k, _fmt(k, v)) for k, v in report["metrics"].items()])
    for note in report["notes"]:
        lines += ["", f"> note: {note}"]
    for key, value in report["details"].items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            columns = list(next(iter(value.values())))
            lines += ["", f"## {key}", ""]
            lines += markdown_table(["", *columns], [[k, *(_fmt(c, v.get(c)) for c in columns)]
                                                     for k, v in value.items()])
    lines += ["", *[f"![{p}]({p})" for p in report["plots"]]]
    misses = [r for s, r in zip(result.scores, rows) if s is not None and s < 0.5][:5]
    if misses:
        lines += ["", "## Examples scored below 50%", ""]
        lines += markdown_table(["line", "predict", "label"],
                                [(r["_line"], _cell(r["predict"]), _cell(r["label"])) for r in misses])
    return "\n".join(lines) + "\n"


def _cell(text: str, width: int = 80) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= width else text[:width - 1] + "…"


def evaluate(predictions: Path, task: str, out: Path, labels: Sequence[str] | None = None,
             dataset: str | None = None, name: str | None = None) -> dict:
    """Score `predictions` for `task`; write report.json, report.md, scores.jsonl and the plots under `out`."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    rows = load_predictions(predictions)
    notes = []
    if dataset:
        mismatched = join_dataset(rows, dataset)
        if mismatched:
            notes.append(f"{mismatched} of {len(rows)} labels differ from the --dataset answers on the same line: "
                         "check that it is the file that was predicted, in the same order")
    result = TASKS[task].run(rows, labels)
    out.mkdir(parents=True, exist_ok=True)
    plots = TASKS[task].charts(task, TASKS[task].title, result, out)
    report = {"task": task, "name": name or run_name(predictions),
              "predictions": str(predictions), "dataset": str(dataset) if dataset else None, "count": len(rows),
              "metrics": result.metrics, "details": result.details, "notes": notes + result.notes,
              "plots": [p.name for p in plots]}
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
            name = name or f"{i}_{run_name(path)}"
            reports.append(evaluate(path, task, out / name, labels, name=name))
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
    grouped_bars({run: {k: v or 0.0 for k, v in m.items()} for run, m in table.items()}, out / "compare.png",
                 f"{tasks.pop()}: " + " vs ".join(runs))
    metric_names = list(dict.fromkeys(k for m in table.values() for k in m))
    cells = []
    for metric in metric_names:
        base = table[runs[0]].get(metric)
        row = [metric, _fmt(metric, base)]
        for run in runs[1:]:
            value = table[run].get(metric)
            delta = "" if value is None or base is None else f" ({_difference(metric, value, base)})"
            row.append(_fmt(metric, value) + delta)
        cells.append(row)
    lines = ["# Comparison", "", *markdown_table(["metric", *runs], cells), "", "![compare.png](compare.png)", ""]
    (out / "compare.md").write_text("\n".join(lines))
    result = {"runs": runs, "metrics": table, "count": {run: r["count"] for run, r in zip(runs, reports)}}
    (out / "compare.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = __doc__.split("\n\n", 2)[2].rstrip() + "\n\n" + "\n".join(help_lines())
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("predictions", nargs="?", type=Path, help="generated_predictions.jsonl")
    parser.add_argument("--task", choices=TASKS)
    parser.add_argument("--out", type=Path, help="report folder (default: eval_<task> next to the predictions)")
    parser.add_argument("--dataset", help="the predicted dataset (JSONL or dataset_info name): extra fields by line")
    parser.add_argument("--labels", nargs="+", help=labels_help())
    parser.add_argument("--label-set", choices=EMOTION_LABEL_SETS,
                        help="emotion: a published label set instead of --labels: " + "; ".join(
                            f"{k}: {s.title} ({', '.join(s.labels)})" for k, s in EMOTION_LABEL_SETS.items()))
    parser.add_argument("--name", help="run name shown in the report (default: the predictions' folder, or the "
                                       "folder above it when that is `predict`: saves/emotion/qwen3_vl_4b_lora/"
                                       "predict/generated_predictions.jsonl -> qwen3_vl_4b_lora)")
    parser.add_argument("--compare", nargs="+", type=Path, metavar="RUN",
                        help="report folders/report.json files (or prediction files with --task) side by side")
    parser.add_argument("--names", nargs="+", help="with --compare: one name per run")


def _labels(args: argparse.Namespace) -> list[str] | None:
    """--labels, or the classes of --label-set (not both)."""
    if args.label_set and args.labels:
        raise ValueError("give --labels or --label-set, not both")
    return list(EMOTION_LABEL_SETS[args.label_set].labels) if args.label_set else args.labels


def run(args: argparse.Namespace) -> int:
    try:
        if args.compare:
            out = args.out or Path("eval_compare")
            compare(args.compare, out, args.task, args.names, _labels(args))
            print((out / "compare.md").read_text())
            return 0
        if not args.predictions or not args.task:
            print("vlmr eval: give PREDICTIONS and --task, or --compare RUN RUN...", file=sys.stderr)
            return 2
        out = args.out or args.predictions.parent / f"eval_{args.task}"
        report = evaluate(args.predictions, args.task, out, _labels(args), args.dataset, args.name)
    except (ValueError, OSError) as e:  # bad input (file:line and the fix), missing or unreadable file
        print(f"vlmr eval: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report["metrics"], indent=2))
    print(f"report: {out / 'report.md'}")
    return 0
