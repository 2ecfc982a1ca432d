"""`vlmr doctor` and `vlmr install-hook`: is the autoload hook active, and what does it register."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import sys
import sysconfig

PTH_NAME = "vlmrecipes-autoload.pth"
FIX = "run `vlmr install-hook` in this environment (an editable install does not ship the .pth), then retry"


def pth_source() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), PTH_NAME)


def pth_target() -> str:
    return os.path.join(sysconfig.get_paths()["purelib"], PTH_NAME)


def add_install_hook_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--uninstall", action="store_true", help="remove the .pth instead")


def run_install_hook(args: argparse.Namespace) -> int:
    target = pth_target()
    if args.uninstall:
        if os.path.exists(target):
            os.remove(target)
        print(f"removed {target}")
        return 0
    shutil.copyfile(pth_source(), target)
    print(f"wrote {target}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="print only problems")


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for dist in ("vlm-recipes", "torch", "transformers", "peft", "datasets", "accelerate", "deepspeed", "llamafactory"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def check() -> tuple[dict[str, list[str]], list[str]]:
    """Import LLaMA-Factory's hooked modules and return (registered items, problems)."""
    from vlmrecipes import _autoload
    from vlmrecipes.plugins import registry

    problems: list[str] = []
    if os.environ.get("VLMR_NO_AUTOLOAD"):
        problems.append("VLMR_NO_AUTOLOAD is set: the hook is disabled in this process; unset it")
    elif not _autoload.is_active():
        problems.append(f"autoload hook is not active in {sys.executable}: {FIX}")

    # Importing these fires the hook (when active); then check that each entry really landed.
    for module in registry.HOOKS:
        importlib.import_module(module)
    from llamafactory.data.mm_plugin import PLUGINS
    from llamafactory.data.template import TEMPLATES
    from llamafactory.extras.constants import SUPPORTED_MODELS
    from llamafactory.model.model_utils.visual import COMPOSITE_MODELS
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    patched = {m for m in registry.PATCHES if getattr(importlib.import_module(m), "_vlmr_patched", False)}
    landed = {
        "templates": TEMPLATES,
        "mm_plugins": PLUGINS,
        "model_groups": SUPPORTED_MODELS,
        "composite_models": COMPOSITE_MODELS,
        "architectures": CONFIG_MAPPING,
        "patches": patched,
    }
    for kind, names in registry.registered().items():
        missing = [n for n in names if n not in landed[kind]]
        if missing:
            problems.append(f"{kind} not registered in LLaMA-Factory/transformers: {', '.join(missing)}")
    for module, tb in _autoload.failures.items():
        problems.append(f"registration after importing {module} raised:\n{tb}")
    return registry.registered(), problems


def run(args: argparse.Namespace) -> int:
    from vlmrecipes import _autoload

    if not args.quiet:
        for name, version in _versions().items():
            print(f"{name:14s} {version}")
        print(f"{'hook':14s} {'active' if _autoload.is_active() else 'NOT active'} ({pth_target()})")
    items, problems = check()
    if not args.quiet:
        for kind, names in items.items():
            print(f"{kind:17s} {', '.join(names) or '-'}")
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    if not problems and not args.quiet:
        print("OK: llamafactory-cli sees everything vlm-recipes registers")
    return 1 if problems else 0
