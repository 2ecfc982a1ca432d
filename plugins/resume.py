"""Fix: automatic resume picks the newest `checkpoint-N` even when a kill left it half-written.

Upstream: transformers' `trainer_utils.get_last_checkpoint(output_dir)` returns the `checkpoint-N` folder with the
largest N, checking only that it is a folder. LLaMA-Factory 0.9.5 resumes from it automatically whenever
`output_dir` holds checkpoints and `overwrite_output_dir` is off (`hparams/parser.py`, "Resuming training from
..."), and so does `Trainer.train(resume_from_checkpoint=True)`. transformers does not write a checkpoint
atomically: `_save_checkpoint` creates the folder, writes the weights, the optimizer, scheduler and RNG states,
and `trainer_state.json` last, each file in place.

Symptom: a job preempted or killed (`kill -9`, the OOM killer, a spot instance reclaimed) while it saves leaves a
`checkpoint-N` with truncated weights or without `trainer_state.json`. Rerunning the same command then resumes
from that folder and fails, every time, until the user finds and deletes the folder by hand; the previous,
complete checkpoint is never tried. Measured on the tiny Qwen2.5-VL twin (LoRA, checkpoint-4 of 4 with its adapter
cut to half and no trainer_state.json): "Resuming training from .../checkpoint-4", then `SafetensorError: Error while
deserializing header: incomplete metadata, file not fully covered`; with complete weights but no
trainer_state.json, `TrainerState.load_from_json` raises FileNotFoundError.

Effect of the patch: `get_last_checkpoint` returns the newest COMPLETE checkpoint: `trainer_state.json` present
and valid JSON, every `*.safetensors` file as long as its header says (8-byte header size + header + the end of
its last tensor), every shard a `*.safetensors.index.json` names present, and the ZeRO folder DeepSpeed's `latest`
names present. A skipped folder is named in a warning with what is missing. The rerun of the same command then
continues from the last step that was saved completely (`tests/test_resume.py`: a SIGKILLed tiny run with a
half-written newest checkpoint resumes from the one before and ends with the same losses as an uninterrupted run;
upstream picks the half-written one).
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
from pathlib import Path

logger = logging.getLogger(__name__)
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")  # transformers' PREFIX_CHECKPOINT_DIR + "-" + global step


def safetensors_complete(path: Path) -> bool:
    """Is `path` as long as its header says? (u64 little-endian header size, JSON header, then the tensor bytes)"""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (header_size,) = struct.unpack("<Q", f.read(8))
            if header_size > size - 8:
                return False
            header = json.loads(f.read(header_size))
    except (OSError, struct.error, ValueError):
        return False
    data_end = max((t["data_offsets"][1] for name, t in header.items() if name != "__metadata__"), default=0)
    return size == 8 + header_size + data_end


def incomplete(checkpoint: Path) -> str | None:
    """Why `checkpoint` cannot be resumed from (what a killed save left out), or None when it is complete."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except FileNotFoundError:
        return "no trainer_state.json (transformers writes it last: the save was interrupted)"
    except ValueError:
        return "trainer_state.json is cut short (the save was interrupted while writing it)"
    for weights in sorted(checkpoint.glob("*.safetensors")):
        if not safetensors_complete(weights):
            return f"{weights.name} is shorter than its header says (the save was interrupted)"
    for index in sorted(checkpoint.glob("*.safetensors.index.json")):
        shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        missing = sorted(name for name in shards if not (checkpoint / name).exists())
        if missing:
            return f"{index.name} names missing shards {', '.join(missing)}"
    latest = checkpoint / "latest"  # DeepSpeed: the folder of this step's ZeRO states
    if latest.exists() and not (checkpoint / latest.read_text().strip()).is_dir():
        return f"DeepSpeed's `latest` names {latest.read_text().strip()!r}, which is missing"
    return None


def last_complete_checkpoint(folder: str | os.PathLike) -> str | None:
    """transformers' `get_last_checkpoint`, skipping checkpoints a kill left half-written (with a warning)."""
    steps = sorted(((int(m.group(1)), entry) for entry in os.listdir(folder)
                    if (m := CHECKPOINT.match(entry)) and os.path.isdir(os.path.join(folder, entry))), reverse=True)
    for _, name in steps:
        checkpoint = Path(folder) / name
        problem = incomplete(checkpoint)
        if problem is None:
            return str(checkpoint)
        logger.warning("[vlm-recipes] not resuming from %s: %s; trying the checkpoint before it", checkpoint, problem)
    return None


def patch_last_checkpoint(trainer_utils) -> None:
    """Replace `transformers.trainer_utils.get_last_checkpoint`, right after that module is imported and before
    LLaMA-Factory's parser and transformers' Trainer import the name from it."""
    trainer_utils.get_last_checkpoint = last_complete_checkpoint
