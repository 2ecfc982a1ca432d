"""The one record schema every converter yields, and the conversation checks shared by writer and validator.

A converter yields, per raw record, either

- `Sample(id, messages, images, extra)`: a LLaMA-Factory ShareGPT conversation (`role`/`content` turns,
  one `<image>` placeholder per image, LLaMA-Factory's `mm_plugin` convention) plus its images as
  `ImageRef`s, and `extra` fields kept verbatim in the output record for the evaluator (VQAv2's ten answers,
  `answer_type`, an emotion `label`...); or
- `Skipped(id, reason, detail)`: why the record is not emitted, with a detail that names the fix.

Written record (one JSON line, keys in this order):
    {"id": "GCC_train_002582585",
     "messages": [{"role": "user", "content": "<image>Describe the image."},
                  {"role": "assistant", "content": "olive oil is a healthy ingredient."}],
     "images": ["llava_cc3m/media/GCC_train_002582585.jpg"], "answer_type": "..."}
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

IMAGE_TOKEN = "<image>"  # LLaMA-Factory's image placeholder in ShareGPT content

# Skip reasons (a closed vocabulary, so the report's counts per reason are comparable across sources).
MISSING_IMAGE = "missing_image"
EMPTY_IMAGE_FILE = "empty_image_file"
TRUNCATED_IMAGE = "truncated_image"
UNREADABLE_IMAGE = "unreadable_image"
IMAGE_TOO_LARGE = "image_too_large"
EMPTY_TURN = "empty_turn"
IMAGE_COUNT_MISMATCH = "image_count_mismatch"
BAD_ROLES = "bad_roles"
BAD_LABEL = "bad_label"
MALFORMED = "malformed_record"
# Policy skips: the record is fine but deliberately left out (modality filter, per-class cap). They are
# counted, listed in the report, and never fail `--strict`.
FILTERED = "filtered"
OVER_CLASS_CAP = "over_class_cap"
POLICY_REASONS = frozenset({FILTERED, OVER_CLASS_CAP})


@dataclass(frozen=True)
class ImageRef:
    """One image of a sample and the stable name it gets under the output `media/` folder.

    `source` is a file on disk (str or Path), encoded bytes (Parquet/zip/CSV sources), or an already decoded PIL image
    (a face crop, FER2013's pixel string). `name` is relative (e.g. "train2017/000000000009.jpg"); two
    samples naming the same image share one media file.
    """

    source: Union[str, Path, bytes, Any]
    name: str


@dataclass
class Sample:
    id: str
    messages: list[dict[str, str]]
    images: list[ImageRef] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Skipped:
    id: str
    reason: str
    detail: str = ""


Record = Union[Sample, Skipped]


def chat(prompt: str, answer: str, n_images: int = 1, system: str | None = None) -> list[dict[str, str]]:
    """A one-turn conversation with `n_images` placeholders in front of the prompt (LLaVA-Instruct order)."""
    turns = [{"role": "system", "content": system}] if system else []
    turns.append({"role": "user", "content": IMAGE_TOKEN * n_images + prompt})
    turns.append({"role": "assistant", "content": answer})
    return turns


def check_messages(messages: Any, n_images: int) -> tuple[str, str] | None:
    """(reason, detail naming the fix) if LLaMA-Factory would reject or mis-train `messages`, else None.

    Mirrors LLaMA-Factory's ShareGPT converter: an optional leading system turn, then user/assistant turns
    strictly alternating, starting with user and ending with assistant; and its mm_plugin check that the
    number of `<image>` placeholders equals the number of images.
    """
    if not isinstance(messages, list) or not messages:
        return MALFORMED, "`messages` must be a non-empty list of {role, content} turns"
    turns = messages[1:] if isinstance(messages[0], dict) and messages[0].get("role") == "system" else messages
    placeholders = 0
    for i, turn in enumerate(messages):
        if not isinstance(turn, dict) or not isinstance(turn.get("content"), str):
            return MALFORMED, f"turn {i} must be an object with a string `content`"
        if not turn["content"].strip():
            return EMPTY_TURN, f"turn {i} ({turn.get('role')}) is empty: drop the record or fill the turn"
        placeholders += turn["content"].count(IMAGE_TOKEN)
    if not turns or len(turns) % 2:
        return BAD_ROLES, f"{len(turns)} non-system turns: need user/assistant pairs ending with assistant"
    for i, turn in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if turn.get("role") != expected:
            return BAD_ROLES, f"turn {i + len(messages) - len(turns)} has role {turn.get('role')!r}, expected " \
                              f"{expected!r}: roles must alternate user/assistant"
    if placeholders != n_images:
        return IMAGE_COUNT_MISMATCH, f"{placeholders} {IMAGE_TOKEN} placeholder(s) for {n_images} image(s): " \
                                     f"put exactly one {IMAGE_TOKEN} per image in the user turns"
    return None


def record_rng(seed: int, key: str) -> random.Random:
    """A generator seeded by (seed, record key): choices stay the same whatever the record order or filters.

    String seeds are hashed with SHA-512 by `random.seed`, so this is stable across runs and platforms.
    """
    return random.Random(f"{seed}:{key}")
