"""`vlmr build KIND ...`: assemble one of our custom architectures from pretrained checkpoints.

Each kind's module defines `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib

BUILDERS: dict[str, str] = {
    "siglip-qwen": "vlmrecipes.plugins.siglip_qwen",
    "multiway": "vlmrecipes.plugins.build_multiway",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, module_name in BUILDERS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(sub.add_parser(kind, help=(module.__doc__ or "").strip().splitlines()[0]))


def run(args: argparse.Namespace) -> int:
    return importlib.import_module(BUILDERS[args.kind]).run(args)
