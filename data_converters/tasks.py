"""Sample builders shared by converters of the same task family (VQA, classification), with their prompts.

Prompts are fixed strings (snapshot-tested) so a dataset converted today matches one converted last month.
"""

from __future__ import annotations

from typing import Any

from vlmrecipes.data_converters.schema import BAD_LABEL, EMPTY_TURN, ImageRef, Record, Sample, Skipped, chat

# LLaVA-1.5's short-answer VQA instruction (its VQAv2 / GQA evaluation prompt).
SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
CLASSIFY_PROMPT = "What is {subject} in the image? Answer with one of: {classes}."


def vqa_sample(record_id: str, image: ImageRef, question: Any, answer: Any, extra: dict[str, Any] | None = None,
               *, short_answer: bool = True) -> Record:
    """One image, one question, one answer; empty question/answer -> Skipped(empty_turn)."""
    question, answer = str(question or "").strip(), str(answer if answer is not None else "").strip()
    if not question or not answer:
        return Skipped(record_id, EMPTY_TURN,
                       f"question {question!r:.60} / answer {answer!r:.60}: both must be non-empty")
    return Sample(record_id, chat(question + (SHORT_ANSWER if short_answer else ""), answer), [image], extra or {})


def medvqa_sample(record_id: str, image: ImageRef, question: Any, answer: Any, answer_type: Any,
                  extra: dict[str, Any] | None = None) -> Record:
    """A medical VQA sample keeping `answer_type` ("closed" | "open") for the LLaVA-Med style evaluator.

    `answer_type=None` infers it as PathVQA does: yes/no answers are closed, everything else open.
    """
    if answer_type is None:
        answer_type = "closed" if str(answer).strip().lower() in ("yes", "no") else "open"
    kind = str(answer_type).strip().lower()
    if kind not in ("closed", "open"):
        return Skipped(record_id, BAD_LABEL, f"answer_type {answer_type!r} is neither CLOSED nor OPEN: fix the record")
    return vqa_sample(record_id, image, question, answer, {"answer_type": kind, **(extra or {})}, short_answer=False)


def classification_sample(record_id: str, image: ImageRef, label: str, classes: list[str],
                          subject: str = "shown", template: str = CLASSIFY_PROMPT) -> Sample:
    """A closed-set classification question listing `classes`; the label is also kept as `extra["label"]`."""
    prompt = template.format(subject=subject, classes=", ".join(classes))
    return Sample(record_id, chat(prompt, label), [image], {"label": label})
