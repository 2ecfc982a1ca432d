"""Progress of a `llamafactory-cli train` subprocess, read from LLaMA-Factory's own progress log.

LLaMA-Factory's `LogCallback` appends one JSON line to `<output_dir>/trainer_log.jsonl` at every logged training
step (`current_steps`, `total_steps`, `loss`, `elapsed_time`, `remaining_time`) and every 5 prediction steps; it
is what LlamaBoard draws its progress bar from. While the subprocess runs (its own output goes to a log file),
`watch` follows that file and shows a tqdm bar on a terminal, or, in a log or CI, one line at every tenth of the
run, on stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tqdm import tqdm

POLL_SECONDS = 0.5
TRAINER_LOG = "trainer_log.jsonl"  # llamafactory.extras.constants.TRAINER_LOG


class _TrainerLog:
    """The entries appended to a trainer_log.jsonl since the last read (the file may not exist yet)."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def new_entries(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                if f.seek(0, 2) < self.offset:  # replaced (LLaMA-Factory deletes it under overwrite_output_dir)
                    self.offset = 0
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written is read next time
        self.offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


def describe(entry: dict, times: bool = True) -> str:
    """`loss 0.4121, 0:00:12 elapsed, 0:00:48 left` from one trainer_log entry (the keys it has); `times=False`
    leaves the times to the tqdm bar, which shows its own."""
    parts = [f"{key} {entry[key]:.4f}" for key in ("loss", "eval_loss") if entry.get(key) is not None]
    if times and "elapsed_time" in entry:
        parts.append(f"{entry['elapsed_time']} elapsed, {entry['remaining_time']} left")
    return ", ".join(parts)


def watch(proc: subprocess.Popen, output_dir: Path, desc: str) -> int:
    """Wait for `proc`, showing its progress from `output_dir/trainer_log.jsonl`; returns its exit status.

    Entries already in the file when the run starts (a resumed run appends to it) are not shown.
    """
    log = _TrainerLog(Path(output_dir) / TRAINER_LOG)
    log.offset = log.path.stat().st_size if log.path.exists() else 0
    interactive = sys.stderr.isatty()
    bar = tqdm(desc=desc, unit=" steps", disable=not interactive)
    next_tenth = 1
    while True:
        try:
            proc.wait(timeout=POLL_SECONDS)
            finished = True
        except subprocess.TimeoutExpired:
            finished = False
        for entry in log.new_entries():
            total, step = entry.get("total_steps"), entry.get("current_steps")
            if not total or step is None:
                continue
            if interactive:
                bar.total = total
                bar.update(step - bar.n)
                bar.set_postfix_str(describe(entry, times=False), refresh=True)
            elif step * 10 >= next_tenth * total:
                print(f"{desc}: {step}/{total} steps ({step / total:.0%}), {describe(entry)}", file=sys.stderr,
                      flush=True)
                next_tenth = step * 10 // total + 1
        if finished:
            bar.close()
            return proc.returncode
