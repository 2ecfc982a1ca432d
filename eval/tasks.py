"""The evaluation tasks, one entry each: `vlmr eval`, `vlmr bench` and their `--help` all read `TASKS`.

A task is a pure scorer (`vlmrecipes.eval.scoring`: rows -> numbers), the charts a report draws from its
result (`vlmrecipes.eval.plots`), and what `--labels` means for it, if anything.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vlmrecipes.eval import plots, scoring
from vlmrecipes.eval.scoring import TaskResult


@dataclass(frozen=True)
class Task:
    """One evaluation task.

    Attributes:
        name: the `--task` value.
        title: how charts name it.
        reads: what it measures and which row fields it reads (one `--help` line).
        score: rows -> TaskResult; called with the `--labels` values when `labels` is set.
        charts: (task name, title, result, report folder) -> the PNGs it wrote there.
        labels: what `--labels` gives this task; None: the task takes no labels.
    """

    name: str
    title: str
    reads: str
    score: Callable[..., TaskResult]
    charts: Callable[[str, str, TaskResult, Path], list[Path]]
    labels: str | None = None

    def run(self, rows: list[dict], labels: Sequence[str] | None = None) -> TaskResult:
        """Score `rows`; `labels` for a task that takes none is an error, not silently ignored."""
        check_labels(self.name, labels)
        return self.score(rows, labels) if self.labels else self.score(rows)


TASKS: dict[str, Task] = {task.name: task for task in (
    Task("vqa", "VQA",
         "VQAv2 accuracy over `answers` (else the label), exact match, ANLS; split by `answer_type`.",
         scoring.score_vqa, plots.answer_type_bars),
    Task("caption", "Caption metrics",
         "BLEU-4, ROUGE-L, CIDEr-D against `references` (else all labels of the same `image_id`, else the label); "
         "Chinese through jieba.",
         scoring.score_caption, plots.metric_bars),
    Task("medvqa", "Medical VQA",
         "the published conventions side by side, each named with its source: LLaVA-Med (open token recall, "
         "closed yes/no substring accuracy), MedEvalKit (closed: exactly one of yes/no; open: exact match), "
         "lmms-eval SLAKE (normalised exact match, yes/no synonyms), and our strict whole-word variant; open/closed "
         "from `answer_type` (missing -> yes/no answers are closed); broken down by `answer_type`, VQA-RAD "
         "`question_type`, SLAKE `modality`/`content_type`/`q_lang` where rows carry them.",
         scoring.score_medvqa, plots.convention_bars),
    Task("emotion", "emotion",
         "accuracy, macro-F1, weighted F1, per-class precision/recall, confusion matrix; labels from `--labels`, "
         "`--label-set` (AffectNet-8/7, RAF-DB, FER2013), the classes a converted question offers (from `prompt` or "
         "--dataset; all of them listed, absent ones too) or the gold `label`s, normalised as answers are (case, "
         "punctuation, synonyms: \"Happy\", \"HAPPY.\" and \"Happiness\" are one class); the published set "
         "the labels match is named; unmapped answers counted.",
         scoring.score_emotion, plots.classification_charts, labels="the label set"),
    Task("choice", "choice",
         "option-letter accuracy (letters extracted from answer and label; `options` used when present).",
         scoring.score_choice, plots.classification_charts, labels="the option letters"),
)}


def help_lines() -> list[str]:
    """`- name: what it reads` per task, wrapped for an epilog."""
    return [textwrap.fill(f"- {name}: {task.reads}", 110, subsequent_indent="  ") for name, task in TASKS.items()]


def labels_help() -> str:
    """The `--labels` help: what it gives each task that takes it."""
    return "; ".join(f"{name}: {task.labels}" for name, task in TASKS.items() if task.labels)


def check_labels(task: str | None, labels: Sequence[str] | None) -> None:
    """ValueError when `labels` are given to a task that takes none (they would be silently ignored)."""
    takers = [name for name, t in TASKS.items() if t.labels]
    if labels and task not in takers:
        raise ValueError(f"--labels goes with --task {' or '.join(takers)}, not with {task or 'no task'}")
