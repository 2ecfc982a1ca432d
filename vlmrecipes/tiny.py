"""`vlmr tiny KIND --out DIR`: tiny random-weight models of the real architecture classes, for tests.

Each kind is a builder `fn(out_dir: Path, seed: int) -> Path` registered in `TINY_KINDS` as "module:function"
(imported only when used). A tiny model is a few MB, deterministic for a seed, saved with a locally trained
byte-level BPE tokenizer carrying the family's special tokens, the family's chat template, and a processor
that loads with `AutoProcessor`.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

TINY_KINDS: dict[str, str] = {
    "qwen2_5_vl": "vlmrecipes.tiny_qwen:build_qwen2_5_vl",
    "qwen2_5_vl_demo": "vlmrecipes.tiny_qwen:build_qwen2_5_vl_demo",
    "qwen3_vl": "vlmrecipes.tiny_qwen:build_qwen3_vl",
    "qwen2_5_omni": "vlmrecipes.tiny_qwen:build_qwen2_5_omni",
    "siglip_qwen": "vlmrecipes.plugins.siglip_qwen:build_tiny",
    "multiway": "vlmrecipes.plugins.build_multiway:build_tiny",
}


def register_tiny_kind(kind: str, builder: str) -> None:
    TINY_KINDS[kind] = builder


def build_tiny(kind: str, out_dir: str | Path, seed: int = 0) -> Path:
    if kind not in TINY_KINDS:
        raise ValueError(f"unknown tiny model kind {kind!r}; choose one of: {', '.join(TINY_KINDS)}")
    module, _, fn = TINY_KINDS[kind].partition(":")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return getattr(importlib.import_module(module), fn)(out, seed)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=list(TINY_KINDS))
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    path = build_tiny(args.kind, args.out, args.seed)
    print(f"tiny {args.kind} model written to {path}")
    return 0
