"""`vlmr`: what LLaMA-Factory does not do. Each subcommand lives in its own module, imported only when used.

A subcommand module defines `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). `vlmr --help` lists them without importing any of them.
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("vlmrecipes.workdir", "set up a working directory (recipes, dataset registry) to run everything from"),
    "doctor": ("vlmrecipes.doctor", "versions, hook status, registrations, GPU capabilities, each recipe's attention"),
    "install-hook": ("vlmrecipes.doctor", "write the autoload .pth into this environment (editable installs)"),
    "tiny": ("vlmrecipes.tiny", "build a tiny random-weight model of a real architecture, for tests"),
    "demo-data": ("vlmrecipes.demo_data", "generate the bundled synthetic demo datasets"),
    "smoke": ("vlmrecipes.smoke", "a few CPU steps of a recipe on its tiny twin (or yours): train, predict, export"),
    "demo": ("vlmrecipes.demo", "train a tiny VLM on synthetic shapes on the CPU; accuracy before/after"),
    "realsize": ("vlmrecipes.realsize", "a recipe's real-size model on the meta device: parameters, freezing, LoRA"),
    "plan": ("vlmrecipes.plan", "predicted peak GPU memory per device of a training recipe, and whether it fits"),
    "build": ("vlmrecipes.build", "assemble a custom architecture from pretrained checkpoints (see its --help)"),
    "convert": ("vlmrecipes.data_converters.cli", "convert a raw public dataset to a registered ShareGPT dataset"),
    "validate": ("vlmrecipes.data_converters.validate", "check a dataset as LLaMA-Factory will see it"),
    "stats": ("vlmrecipes.data_converters.validate", "token-length distribution of a recipe's dataset"),
    "eval": ("vlmrecipes.eval.report", "task metrics and reports from generated predictions"),
    "baseline": ("vlmrecipes.eval.baseline", "zero-shot BLIP predictions in the same format, for reports"),
    "bench": ("vlmrecipes.eval.bench", "latency benchmark of an OpenAI-compatible served model"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlmr", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _version() -> str:
    from vlmrecipes import __version__

    return f"vlm-recipes {__version__}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        build_parser().parse_args(argv or ["--help"])
        return 2
    name, rest = argv[0], argv[1:]
    module_name, help_text = COMMANDS[name]
    # By name, only the one subcommand's module: importing all of them (numpy, yaml, the converters, ...) would
    # add ~0.4 s to every `vlmr` call.
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"vlmr {name}", description=help_text)
    add = getattr(module, f"add_{name.replace('-', '_')}_arguments", None) or module.add_arguments
    run = getattr(module, f"run_{name.replace('-', '_')}", None) or module.run
    add(parser)
    return int(run(parser.parse_args(rest)) or 0)


if __name__ == "__main__":
    sys.exit(main())
