"""PNG plots for the reports (matplotlib, headless Agg backend).

The charts of a task's report (`metric_bars`, `answer_type_bars`, `classification_charts`: named in the task
table, `vlmrecipes.eval.tasks`) are drawn from a scorer's `TaskResult`; scorers themselves draw nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

from vlmrecipes.eval.scoring import Confusion, TaskResult, is_rate  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _rate_axis(ax) -> None:
    """A rate's full range, 0 to 1, whatever the values: all-zero recalls are not drawn on a -0.04..0.04 axis,
    and two charts of rates read alike."""
    ax.set_ylim(0.0, 1.0)


def bar_figure(values: Mapping[str, float], title: str, ylabel: str = "", rate: bool = False):
    """One bar per named value, labelled with its number; `rate`: values in [0, 1], on a 0..1 axis."""
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(values) + 2), 3.6))
    bars = ax.bar(list(values), list(values.values()), color="#4c72b0")
    ax.bar_label(bars, fmt="%.3g")
    ax.set_title(title, pad=14)  # room for the label of a bar at the top of the axis
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", labelrotation=20)
    if rate:
        _rate_axis(ax)
    return fig


def bar_chart(values: Mapping[str, float], path: Path, title: str, ylabel: str = "", rate: bool = False) -> Path:
    """`bar_figure` saved as a PNG."""
    return _save(bar_figure(values, title, ylabel, rate), path)


def grouped_bars(table: Mapping[str, Mapping[str, float]], path: Path, title: str) -> Path:
    """Runs side by side: one group per metric, one bar per run (`table[run][metric]`); on a 0..1 axis when every
    metric is a rate."""
    runs = list(table)
    metrics = list(dict.fromkeys(m for run in runs for m in table[run]))
    width = 0.8 / max(1, len(runs))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(metrics) + 2), 3.8))
    for i, run in enumerate(runs):
        xs = [j + (i - (len(runs) - 1) / 2) * width for j in range(len(metrics))]
        bars = ax.bar(xs, [table[run].get(m, 0.0) for m in metrics], width, label=run)
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
    ax.set_xticks(range(len(metrics)), metrics, rotation=20)
    ax.set_title(title, pad=14)
    ax.legend(fontsize=8)
    if all(is_rate(m) for m in metrics):
        _rate_axis(ax)
    return _save(fig, path)


def confusion_png(confusion: Confusion, path: Path, title: str) -> Path:
    """Confusion matrix: a row per gold class, a column per predicted class (`Confusion.columns`: the unmapped
    answers' column only when there are some), each cell its count."""
    counts = confusion.counts()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(confusion.columns) + 2), max(4.0, 0.7 * len(counts) + 2)))
    ax.imshow(counts, cmap="Blues", aspect="auto")
    peak = max((max(row) for row in counts if row), default=0)
    for i, row in enumerate(counts):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > peak / 2 else "black")
    ax.set_xticks(range(len(confusion.columns)), confusion.columns, rotation=45, ha="right")
    ax.set_yticks(range(len(confusion.classes)), confusion.classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title)
    return _save(fig, path)


def distribution_png(series: Mapping[str, Sequence[float]], path: Path, title: str, xlabel: str) -> Path:
    """Empirical CDF of each series (latency, TTFT), which shows the tail that a mean hides."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    plotted = False
    for name, values in series.items():
        ordered = sorted(values)
        if ordered:
            ax.step(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], where="post", label=name)
            plotted = True
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of requests")
    ax.set_title(title + ("" if plotted else " (none succeeded)"))
    ax.grid(alpha=0.3)
    if plotted:
        ax.legend()
    return _save(fig, path)


def timeline_png(requests: Sequence[tuple[float, float, str]], path: Path, title: str) -> Path:
    """Each request as (start, latency, outcome): a server dying mid-run shows as the outcome changing."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for outcome in sorted({o for _, _, o in requests}, key=lambda o: (o != "ok", o)):
        points = [(s, lat) for s, lat, o in requests if o == outcome]
        ax.scatter([p[0] for p in points], [p[1] for p in points], s=12, label=f"{outcome} ({len(points)})")
    ax.set_xlabel("request start (s since run start)")
    ax.set_ylabel("latency (s)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if requests:
        ax.legend(fontsize=8)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------------------
# a task report's charts: (task name, title, result, report folder) -> the PNGs written


def metric_bars(task: str, title: str, result: TaskResult, out: Path) -> list[Path]:
    """The headline metrics side by side."""
    return [bar_chart({k: v or 0.0 for k, v in result.metrics.items()}, out / f"{task}_metrics.png", title,
                      rate=all(is_rate(k) for k in result.metrics))]


def convention_bars(task: str, title: str, result: TaskResult, out: Path) -> list[Path]:
    """Open, closed and overall score under each scoring convention, side by side."""
    table = {name: {part: row[part] or 0.0 for part in ("open", "closed", "all")}
             for name, row in result.details["conventions"].items()}
    return [grouped_bars(table, out / f"{task}_conventions.png", f"{title}: one model, four scoring conventions")]


def answer_type_bars(task: str, title: str, result: TaskResult, out: Path) -> list[Path]:
    """VQA accuracy per answer type (yes/no, number, other)."""
    by_type = {g: v["score"] or 0.0 for g, v in result.details["vqa_accuracy_by_answer_type"].items()}
    return [bar_chart(by_type, out / f"{task}_by_answer_type.png", f"{title} accuracy by answer type", rate=True)]


def classification_charts(task: str, title: str, result: TaskResult, out: Path) -> list[Path]:
    """The confusion matrix and the recall of each class."""
    recall = {label: v["recall"] for label, v in result.details["per_class"].items()}
    return [confusion_png(result.confusion, out / f"{task}_confusion.png", f"{title}: gold vs predicted"),
            bar_chart(recall, out / f"{task}_recall.png", f"{title}: recall per class", rate=True)]
