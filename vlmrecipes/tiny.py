"""`vlmr tiny KIND --out DIR`: tiny random-weight models of the real architecture classes, for tests.

The kinds are each architecture's tiny twin and its variants (`plugins/architectures.py`). A tiny model is a few
MB, deterministic for a seed, saved with a locally trained byte-level BPE tokenizer carrying the family's special
tokens, the family's chat template, and a processor that loads with `AutoProcessor`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vlmrecipes.plugins.architecture import TinyBuilder
from vlmrecipes.plugins.architectures import ARCHITECTURES

TINY_KINDS: dict[str, TinyBuilder] = {
    kind: builder
    for arch in ARCHITECTURES
    for kind, builder in {arch.name: arch.tiny, **arch.tiny_variants}.items()
}


def build_tiny(kind: str, out_dir: str | Path, seed: int = 0) -> Path:
    if kind not in TINY_KINDS:
        raise ValueError(f"unknown tiny model kind {kind!r}; choose one of: {', '.join(TINY_KINDS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return TINY_KINDS[kind](out, seed)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=list(TINY_KINDS))
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    path = build_tiny(args.kind, args.out, args.seed)
    print(f"tiny {args.kind} model written to {path}")
    return 0
