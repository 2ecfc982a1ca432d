"""`vlmr doctor` and `vlmr install-hook`: is the autoload hook active, what does it register, and what can the GPU do.

The GPU section says what this machine really gives each recipe: whether flash-attn, Liger and bf16 are usable,
and which attention implementation every training recipe ends up with, as LLaMA-Factory decides it
(`configure_attn_implementation`) and transformers then resolves it when it builds the model. A missing GPU is
not a problem (the recipes are proven on the CPU by `vlmr smoke`); a GPU that cannot run what a recipe asks is.
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import logging
import os
import shutil
import sys
import sysconfig
from pathlib import Path

from vlmrecipes import realsize, recipes
from vlmrecipes.paths import HOME

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

    # Importing these fires the hook (when active); then check that each entry really landed. By name: the probe
    # is "import each module the hook watches", whatever the registry lists.
    for module in registry.HOOKS:
        importlib.import_module(module)
    from llamafactory.data.mm_plugin import PLUGINS
    from llamafactory.data.template import TEMPLATES
    from llamafactory.extras.constants import SUPPORTED_MODELS
    from llamafactory.model.model_utils.visual import COMPOSITE_MODELS
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    # the patched modules by name, as the registry lists them
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


def _distribution(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# FlashAttention-2's kernels exist for Ampere (8.0) and newer only; transformers' availability check and
# LLaMA-Factory's `flash_attn: fa2` do not look at the GPU generation, so an older card fails at the first forward.
FLASH_ATTN_2_MIN_CAPABILITY = (8, 0)


def gpu_capabilities() -> tuple[dict[str, str], list[str]]:
    """(name -> what this machine can do, problems): CUDA, bf16, flash-attn, Liger."""
    import torch
    from transformers.utils import is_flash_attn_2_available

    lines: dict[str, str] = {}
    problems: list[str] = []
    cuda = torch.cuda.is_available()
    capability = torch.cuda.get_device_capability(0) if cuda else None
    if cuda:
        name = torch.cuda.get_device_name(0)
        lines["cuda"] = f"{torch.cuda.device_count()} x {name} (compute capability {capability[0]}.{capability[1]})"
        if torch.cuda.is_bf16_supported(including_emulation=False):
            lines["bf16"] = "supported"
        elif torch.cuda.is_bf16_supported():  # what transformers accepts for `bf16: true`
            lines["bf16"] = "emulated only: `bf16: true` recipes run without bf16 tensor cores; use fp16 on this GPU"
            problems.append(f"{name} has no native bf16: recipes with `bf16: true` run emulated and slowly; "
                            "override with `bf16=false fp16=true`")
        else:
            lines["bf16"] = "NOT supported"
            problems.append(f"{name} has no bf16: recipes with `bf16: true` cannot train here; "
                            "override with `bf16=false fp16=true`")
    else:
        lines["cuda"] = f"no (torch {torch.__version__} sees no GPU)"
        lines["bf16"] = "no CUDA: bf16 recipes need use_cpu (`vlmr smoke` proves them on the CPU)"

    version = _distribution("flash-attn")
    if version is None:
        lines["flash-attn"] = "not installed: `flash_attn: fa2` recipes fall back (see attention below)"
    else:
        try:
            import flash_attn  # noqa: F401  (a wheel built for another torch/CUDA fails here, not at install)

            imports = None
        except Exception as err:  # noqa: BLE001  ImportError, OSError of a missing libcudart, undefined symbols
            imports = f"{type(err).__name__}: {err}"
        if imports is not None:
            lines["flash-attn"] = f"{version} installed but does not import: {imports}"
            if cuda:
                problems.append(f"flash-attn {version} does not import ({imports}): `flash_attn: fa2` recipes get "
                                "FlashAttention-2 from LLaMA-Factory and fail at their first forward; reinstall "
                                "flash-attn built for this torch and CUDA, or set `flash_attn: sdpa`")
        elif not is_flash_attn_2_available():
            lines["flash-attn"] = f"{version} installed, not usable here (needs CUDA and flash-attn >= 2.3.3)"
        elif capability < FLASH_ATTN_2_MIN_CAPABILITY:
            generation = ".".join(map(str, capability))
            lines["flash-attn"] = f"{version} installed, NOT usable on compute capability {generation}"
            problems.append(f"FlashAttention-2 needs compute capability 8.0+, this GPU has {generation}: "
                            "LLaMA-Factory still selects it for `flash_attn: fa2` recipes, which "
                            "then fail at their first forward; override with `flash_attn=sdpa`")
        else:
            lines["flash-attn"] = f"{version}, usable"

    version = _distribution("liger-kernel")
    lines["liger-kernel"] = "not installed" if version is None else (
        f"{version}" + ("" if cuda else " installed, not usable here (its Triton kernels need CUDA)"))
    return lines, problems


class _Captured(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def llamafactory_request(config, flash_attn: str) -> tuple[str | None, str | None]:
    """LLaMA-Factory's `configure_attn_implementation` on a fresh copy of `config`, as `load_model` calls it.

    Returns (the implementation it sets, None when it leaves the choice to transformers; its warnings, if any).
    """
    from llamafactory.extras.constants import AttentionFunction
    from llamafactory.hparams import ModelArguments
    from llamafactory.model.model_utils import attention

    config = copy.deepcopy(config)
    config._attn_implementation = None  # as read from config.json
    model_args = ModelArguments(model_name_or_path=str(config.name_or_path), flash_attn=AttentionFunction(flash_attn))
    captured = _Captured()
    logger = logging.getLogger(attention.__name__)
    logger.addHandler(captured)
    logger.propagate = False  # its warnings become our reason column instead of stdout noise
    try:
        attention.configure_attn_implementation(config, model_args)
    finally:
        logger.removeHandler(captured)
        logger.propagate = True
    return config._attn_implementation, "; ".join(captured.messages) or None


def recipe_attention(path: Path, built: dict[str, object]) -> tuple[str, str, str | None]:
    """(flash_attn the recipe asks, the implementation its model runs, LLaMA-Factory's words when it changed it).

    The recipe's real-size model is built on the meta device (`vlmr realsize`, cached in `built` by model path);
    transformers resolved LLaMA-Factory's request, or its own default, when it built it.
    """
    recipe = recipes.load(path)
    asked = str(recipe.get("flash_attn", "auto"))
    key = str(recipe["model_name_or_path"])
    if key not in built:
        built[key] = realsize.build_recipe_model(path, recipe).model
    model = built[key]
    requested, reason = llamafactory_request(model.config, asked)
    if requested is not None:  # None: transformers' default, which it already chose at build time
        model.set_attn_implementation(requested)
    return asked, model.config._attn_implementation, reason


def attention_table() -> tuple[list[str], list[str]]:
    """One line per training recipe (asks -> gets), and the recipes whose model cannot run what they ask here."""
    from transformers.utils import logging as transformers_logging

    lines, problems = [], []
    built: dict[str, object] = {}
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # dtype / device hints of the meta builds are not findings
    try:
        for path in recipes.training_recipes():
            name = path.relative_to(HOME) if path.is_relative_to(HOME) else path
            try:
                asked, gets, reason = recipe_attention(path, built)
            except Exception as err:  # noqa: BLE001  a diagnosis reports what breaks, whatever it raises
                problems.append(f"{name}: its model cannot be built with the attention it asks: "
                                f"{type(err).__name__}: {err}")
                continue
            lines.append(f"{name!s:55s} {asked} -> {gets}" + (f" (LLaMA-Factory: {reason})" if reason else ""))
    finally:
        transformers_logging.set_verbosity(verbosity)
    return lines, problems


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
    capabilities, gpu_problems = gpu_capabilities()
    attention_lines, attention_problems = attention_table()
    problems += gpu_problems + attention_problems
    if not args.quiet:
        for name, state in capabilities.items():
            print(f"{name:14s} {state}")
        print("attention      per training recipe: flash_attn asked -> implementation the model runs")
        for line in attention_lines:
            print(f"  {line}")
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    if not problems and not args.quiet:
        print("OK: llamafactory-cli sees everything vlm-recipes registers")
    return 1 if problems else 0
