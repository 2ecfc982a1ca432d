"""LLaVA conversation files: LLaVA-CC3M-Pretrain-595K (`chat.json`), LLaVA-Instruct-150K (`detail_23k.json`,
`complex_reasoning_77k.json`, `llava_instruct_150k.json`, `llava_v1_5_mix665k.json`) and
Chinese-LLaVA-Vision-Instructions (same schema, translated).

Raw format (LLaVA repo, `docs/Data.md`): one JSON array; `image` is a path relative to the image folder
(absent for text-only rows of the 665K mix); `from` is human/gpt (system optional); `<image>` is at the end of
the first human turn in pretrain data and at its start in instruct data (kept where it is):

    {"id": "GCC_train_002582585", "image": "GCC_train_002582585.jpg",
     "conversations": [{"from": "human", "value": "Provide a brief description of the given image.\\n<image>"},
                       {"from": "gpt", "value": "olive oil is a healthy ingredient used liberally."}]}

Output: the same turns as role/content; roles and `<image>` counts are checked by the writer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from vlmrecipes.data_converters.readers import iter_json_array
from vlmrecipes.data_converters.schema import MALFORMED, ImageRef, Record, Sample, Skipped

DEFAULT_NAME = "llava"
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def iter_records(input: Path, *, images: Path | None, seed: int, split: str) -> Iterator[Record]:
    # An absolute str: 595K Path joins (and abspath of relative names) cost more than the parse itself.
    images_dir = os.path.abspath(images or input.parent / "images")
    for index, raw in iter_json_array(input):
        record_id = str(raw.get("id", index)) if isinstance(raw, dict) else str(index)
        yield convert_record(raw, record_id, images_dir)


def convert_record(raw: object, record_id: str, images_dir: str) -> Record:
    """One LLaVA record -> Sample."""
    if not isinstance(raw, dict) or not isinstance(raw.get("conversations"), list):
        return Skipped(record_id, MALFORMED, "expected an object with a `conversations` list")
    messages = []
    for i, turn in enumerate(raw["conversations"]):
        if not isinstance(turn, dict) or not isinstance(turn.get("from"), str) or turn["from"] not in ROLES \
                or not isinstance(turn.get("value"), str):
            return Skipped(record_id, MALFORMED,
                           f"turn {i} must be {{from: human|gpt|system, value: str}}, got {turn!r:.80}")
        messages.append({"role": ROLES[turn["from"]], "content": turn["value"]})
    names = raw.get("image") or []
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        return Skipped(record_id, MALFORMED,
                       f"`image` must be a file name or a list of them, got {raw.get('image')!r:.80}")
    names = [n.strip() for n in names]
    return Sample(record_id, messages, [ImageRef(os.path.join(images_dir, n), n) for n in names])
