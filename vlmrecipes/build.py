"""`vlmr build KIND ...`: assemble one of our custom architectures from pretrained checkpoints.

The kinds are the architectures' build commands (`plugins/architectures.py`).
"""

from __future__ import annotations

import argparse

from vlmrecipes.plugins.architecture import BuildCommand
from vlmrecipes.plugins.architectures import ARCHITECTURES

BUILDERS: dict[str, BuildCommand] = {arch.build.name: arch.build for arch in ARCHITECTURES if arch.build}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, command in BUILDERS.items():
        command.add_arguments(sub.add_parser(kind, help=command.help))


def run(args: argparse.Namespace) -> int:
    return BUILDERS[args.kind].run(args)
