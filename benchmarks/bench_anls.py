"""What ANLS costs a prediction row: the pure-Python edit distance it used before vs rapidfuzz's, same rows.

    python benchmarks/bench_anls.py [--rows 2000] [--answers 10] [--seed 0]

Rows are random VQAv2-shaped answers: a prediction and `--answers` human answers (VQAv2 has ten), each of one
to six words drawn from a small vocabulary, half of them near-copies of the prediction (a few characters
changed) so that the distance is not trivially the string length. Both runs score the same rows with
`vlmrecipes.eval.metrics.anls`, once with its edit distance replaced by the dynamic-programming loop it had
before (`python_levenshtein`, kept here as the reference) and once as it is; the scores must be equal.
Prints ms per row for each and the ratio.
"""

from __future__ import annotations

import argparse
import random
import string
import time
from unittest import mock

from vlmrecipes.eval import metrics

WORDS = ("red", "blue", "two", "yes", "no", "left", "kitchen", "umbrella", "skateboarding", "tennis racket",
         "fire hydrant", "stop sign", "giraffe", "the number 12", "wooden table", "snowboard", "nothing")


def python_levenshtein(a: str, b: str) -> int:
    """The pure-Python edit distance `metrics.levenshtein` had before rapidfuzz (one row of the DP table)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _answer(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))


def _near_copy(text: str, rng: random.Random) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 3)):
        chars[rng.randrange(len(chars))] = rng.choice(string.ascii_lowercase)
    return "".join(chars)


def random_rows(count: int, answers: int, seed: int) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        prediction = _answer(rng)
        rows.append((prediction, [_near_copy(prediction, rng) if rng.random() < 0.5 else _answer(rng)
                                  for _ in range(answers)]))
    return rows


def ms_per_row(rows: list[tuple[str, list[str]]]) -> tuple[float, list[float]]:
    start = time.perf_counter()
    scores = [metrics.anls(prediction, answers) for prediction, answers in rows]
    return (time.perf_counter() - start) * 1e3 / len(rows), scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--answers", type=int, default=10, help="human answers per row")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = random_rows(args.rows, args.answers, args.seed)
    with mock.patch.object(metrics, "levenshtein", python_levenshtein):
        before, expected = ms_per_row(rows)
    after, scores = ms_per_row(rows)
    if scores != expected:
        raise SystemExit("ANLS scores differ between the two edit distances")
    print(f"{args.rows} rows x {args.answers} answers, same ANLS scores (mean {sum(scores) / len(scores):.4f})")
    print(f"pure Python: {before:.3f} ms/row   rapidfuzz: {after:.4f} ms/row   {before / after:.0f}x faster")


if __name__ == "__main__":
    main()
