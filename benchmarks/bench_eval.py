"""What `vlmr eval` costs on a large prediction file: 50K medvqa rows and 50K emotion rows, end to end.

    python benchmarks/bench_eval.py [--rows 50000] [--seed 0] [--out /tmp/bench_eval]

Writes two generated_predictions.jsonl files shaped like our converted sets' predictions: medvqa rows with
VQA-RAD/SLAKE fields (`answer_type`, `question_type` or `modality`/`content_type`/`q_lang`; half closed
yes/no, half open one-to-four-word answers; replies right, wrong, or wrapped in a sentence) and emotion rows
over AffectNet-8 (answers a label, a synonym, a sentence, or nothing usable). Then runs the real
`vlmr eval PREDICTIONS --task ...` in a subprocess for each and prints the wall seconds (interpreter start,
reading, the four medvqa conventions or the classification metrics, report.json/md, scores.jsonl, PNGs).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

from vlmrecipes.eval.metrics import EMOTION_LABEL_SETS

OPEN_ANSWERS = ("left lung", "liver", "ct", "mri", "right kidney", "pleural effusion", "axial", "brain",
                "small bowel", "two", "left upper lobe", "heart")
SENTENCES = ("The answer is {}.", "{}", "I think it is {}", "{}, as seen in the image", "Probably {}.")


def medvqa_rows(count: int, rng: random.Random) -> list[dict]:
    rows = []
    for i in range(count):
        closed = i % 2 == 0
        label = rng.choice(("yes", "no")) if closed else rng.choice(OPEN_ANSWERS)
        said = label if rng.random() < 0.6 else rng.choice(("yes", "no", "normal") if closed else OPEN_ANSWERS)
        row = {"prompt": "user\n<image>q", "predict": rng.choice(SENTENCES).format(said), "label": label,
               "answer_type": "closed" if closed else "open"}
        if i % 3:
            row["question_type"] = rng.choice(("PRES", "POS", "ABN", "MODALITY", "SIZE"))
        else:
            row.update(modality=rng.choice(("CT", "MRI", "X-Ray")), q_lang="en",
                       content_type=rng.choice(("Organ", "Position", "Abnormal", "Modality")))
        rows.append(row)
    return rows


def emotion_rows(count: int, rng: random.Random) -> list[dict]:
    labels = EMOTION_LABEL_SETS["affectnet8"].labels
    answers = (*labels, "joyful", "furious", "The face looks {}.", "I cannot tell")
    rows = []
    for _ in range(count):
        label = rng.choice(labels)
        answer = label if rng.random() < 0.6 else rng.choice(answers)
        rows.append({"prompt": "user\n<image>q", "predict": answer.format(rng.choice(labels)), "label": label})
    return rows


def time_eval(path: Path, task: str, *extra: str) -> float:
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "vlmr"), "eval", str(path), "--task", task,
                    "--out", str(path.parent / f"report_{task}"), *extra], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_eval"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for task, rows, extra in (("medvqa", medvqa_rows(args.rows, rng), ()),
                              ("emotion", emotion_rows(args.rows, rng), ("--label-set", "affectnet8"))):
        path = args.out / f"{task}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        seconds = time_eval(path, task, *extra)
        print(f"vlmr eval --task {task}: {args.rows} rows in {seconds:.1f} s ({1e6 * seconds / args.rows:.0f} us/row)")


if __name__ == "__main__":
    main()
