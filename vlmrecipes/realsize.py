"""Real-size models without a GPU: the stored config.json of every checkpoint a recipe names, built on the meta device.

`vlmrecipes/model_configs/<hub id, '/' as '--'>.json` holds each checkpoint's config.json (its `_source` key says
where it was read), plus `_preprocessor`, the image-processor facts the image-token count needs.
`published_counts.json` beside them holds the published parameter counts they are checked against.

`measure(recipe)` builds a training recipe's model as LLaMA-Factory would train it, on `torch.device("meta")`
(real shapes, no memory, no weights): the class LLaMA-Factory's `load_model` picks (the Thinker of an Omni
checkpoint), or for a model `vlmr build` assembles, the config its architecture's record composes from the stored
configs (`BuildCommand.compose`); then LLaMA-Factory's own `init_adapter` with the recipe's parsed arguments
(freeze flags, LoRA targets, `additional_target`). What it cannot run without a checkpoint is left out and changes
no parameter count: `patch_config` / `patch_model` (attention implementation, dtype, gradient checkpointing; they
need a tokenizer).
`vlmr realsize RECIPE` prints the result.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from vlmrecipes import build as build_command
from vlmrecipes import recipes as recipe_files
from vlmrecipes.plugins.architecture import PretrainedPart, StoredCheckpoint

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
PUBLISHED_COUNTS = CONFIG_DIR / "published_counts.json"
# keys of the stored files that are ours, not config.json's
_METADATA_KEYS = ("_source", "_preprocessor", "_tokenizer")
# LLaMA-Factory's load_model keeps only the Thinker of these (the Talker and the vocoder are never trained)
_THINKER_MODEL_TYPES = ("qwen2_5_omni", "qwen3_omni_moe")


# ------------------------------------------------------------------------------------------------------
# Stored configs
# ------------------------------------------------------------------------------------------------------

def config_path(model_id: str) -> Path:
    return CONFIG_DIR / f"{model_id.replace('/', '--')}.json"


def is_stored(model_id: str) -> bool:
    return config_path(model_id).exists()


@lru_cache(maxsize=None)
def _stored(model_id: str) -> dict:
    path = config_path(model_id)
    if not path.exists():
        known = sorted(p.stem.replace("--", "/") for p in CONFIG_DIR.glob("*--*.json"))
        raise KeyError(f"no stored config for {model_id!r} (looked for {path}); stored: {', '.join(known)}. "
                       f"Add the checkpoint's config.json there with a `_source` key saying where it was read.")
    with open(path) as f:
        return json.load(f)


def stored_config(model_id: str) -> dict:
    """The checkpoint's config.json as stored (without our `_source` / `_preprocessor` keys); a fresh copy."""
    return {k: v for k, v in json.loads(json.dumps(_stored(model_id))).items() if k not in _METADATA_KEYS}


def preprocessor_facts(model_id: str) -> dict:
    """patch_size / merge_size / temporal_patch_size / min_pixels / max_pixels (Qwen) or image_size (a fixed-size
    tower)."""
    facts = dict(_stored(model_id).get("_preprocessor", {}))
    facts.pop("_source", None)
    return facts


def config_source(model_id: str) -> str:
    return _stored(model_id)["_source"]


def published_count(model_id: str) -> dict:
    """{'parameters': int, 'published_as': str, 'source': str} for a stored checkpoint."""
    with open(PUBLISHED_COUNTS) as f:
        table = json.load(f)
    if model_id not in table:
        raise KeyError(f"{PUBLISHED_COUNTS}: no published parameter count for {model_id!r}; add one with its source")
    return table[model_id]


def pretrained_config(model_id: str):
    """The transformers config object of a stored checkpoint (the class its `model_type` names)."""
    from transformers import AutoConfig

    return AutoConfig.for_model(**stored_config(model_id))


def stored_checkpoint(model_id: str) -> StoredCheckpoint:
    """A stored checkpoint's config and tokenizer size, as architecture records compose built models from them."""
    return StoredCheckpoint(pretrained_config(model_id), _stored(model_id).get("_tokenizer", {}).get("size"))


def build_on_meta(config, auto_class=None):
    """Instantiate `config`'s model on the meta device: real shapes, no memory, no weights.

    `auto_class` (a transformers Auto class) defaults to AutoModelForImageTextToText, what LLaMA-Factory loads VLMs
    with.
    """
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        return (auto_class or AutoModelForImageTextToText).from_config(config)


def count_parameters(module, trainable_only: bool = False, name_contains: str | None = None,
                     where: Callable[[str], bool] | None = None) -> int:
    """Distinct parameters (tied weights counted once, as a checkpoint stores them); `where` selects by name."""
    seen, total = set(), 0
    for name, parameter in module.named_parameters(remove_duplicate=False):
        if id(parameter) in seen or (trainable_only and not parameter.requires_grad):
            continue
        if (name_contains is not None and name_contains not in name) or (where is not None and not where(name)):
            continue
        seen.add(id(parameter))
        total += parameter.numel()
    return total


# ------------------------------------------------------------------------------------------------------
# Which model a recipe trains
# ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PublishedCheck:
    """One parameter count of ours next to the published count it must match within `TOLERANCE`."""

    what: str
    ours: int
    published: int
    published_as: str
    source: str

    @property
    def relative_error(self) -> float:
        return (self.ours - self.published) / self.published


TOLERANCE = 0.005


@dataclass
class BuiltModel:
    """A recipe's model on the meta device, before LLaMA-Factory's adapter setup."""

    model: object
    description: str  # e.g. "Qwen/Qwen3-VL-8B-Thinking", or a built model's `ComposedConfig.description`
    label: str  # short name for tables, e.g. "Qwen3-VL-8B-Thinking"
    image_processor_of: str | None  # stored checkpoint whose image processor the model uses
    checks: list[PublishedCheck]


def _short(model_id: str) -> str:
    return model_id.rstrip("/").split("/")[-1]


def _check(what: str, ours: int, model_id: str) -> PublishedCheck:
    published = published_count(model_id)
    return PublishedCheck(what, ours, published["parameters"], published["published_as"], published["source"])


def _load_class(config):
    """The Auto class LLaMA-Factory 0.9.5's load_model picks for a config (llamafactory/model/loader.py)."""
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoModelForSeq2SeqLM,
        AutoModelForTextToWaveform,
    )

    for auto_class in (AutoModelForImageTextToText, AutoModelForSeq2SeqLM, AutoModelForTextToWaveform):
        if type(config) in auto_class._model_mapping.keys():
            return auto_class
    return AutoModelForCausalLM


def build_hub_model(model_id: str) -> BuiltModel:
    """A stored checkpoint as LLaMA-Factory loads it: the whole model is checked, the Thinker kept for Omni."""
    config = pretrained_config(model_id)
    model = build_on_meta(config, _load_class(config))
    checks = [_check(f"{model_id} ({type(model).__name__})", count_parameters(model), model_id)]
    if model.config.model_type in _THINKER_MODEL_TYPES:
        model = model.thinker
    return BuiltModel(model, model_id, _short(model_id), model_id, checks)


def build_composed_model(command: argparse.Namespace) -> BuiltModel:
    """The model a parsed `vlmr build KIND ...` line would write: its architecture composes the config from the stored
    ones (`BuildCommand.compose`), built here on the meta device; each pretrained part is checked."""
    composed = build_command.BUILDERS[command.kind].compose(command, stored_checkpoint)
    model = build_on_meta(composed.config)  # the autoload hook registered our classes with AutoModelForImageTextToText
    checks = [_part_check(model, part) for part in composed.parts]
    return BuiltModel(model, composed.description, composed.label, composed.image_processor_of, checks)


def _part_check(model, part: PretrainedPart) -> PublishedCheck:
    """The parameters a built model holds from one checkpoint (or the checkpoint's own whole model) next to the
    checkpoint's published count."""
    from transformers import AutoModel

    if part.owns is None:
        ours = count_parameters(build_on_meta(pretrained_config(part.checkpoint), AutoModel))
        what = part.what.format(checkpoint=part.checkpoint)
    else:
        ours = count_parameters(model, where=part.owns)
        what = part.what.format(checkpoint=part.checkpoint, others=count_parameters(model) - ours)
    return _check(what, ours, part.checkpoint)


def _header_build_command(recipe_path: Path) -> argparse.Namespace | None:
    """The `vlmr build KIND ...` line of a recipe's header comment, parsed by `vlmr build`'s own parser."""
    header: list[str] = []  # comment lines, `\`-continued lines joined
    for line in Path(recipe_path).read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if header and header[-1].endswith("\\"):
            header[-1] = header[-1][:-1] + " " + text
        else:
            header.append(text)
    commands = [text for text in header if text.startswith("vlmr build ")]
    if not commands:
        return None
    parser = argparse.ArgumentParser(prog="vlmr build", exit_on_error=False)
    build_command.add_arguments(parser)
    return parser.parse_args(shlex.split(commands[0])[2:])


def _producing_recipe(model_path: str) -> Path | None:
    """The training recipe whose output_dir is `model_path` (e.g. stage 2 starting from stage 1's output)."""
    for path in recipe_files.training_recipes():
        if str(recipe_files.load(path).get("output_dir", "")).rstrip("/") == model_path.rstrip("/"):
            return path
    return None


def build_recipe_model(recipe_path: str | Path, recipe: dict | None = None) -> BuiltModel:
    """The model a training recipe's `model_name_or_path` names, on the meta device."""
    recipe_path = Path(recipe_path)
    recipe = recipe if recipe is not None else recipe_files.load(recipe_path)
    model_path = str(recipe["model_name_or_path"])
    if is_stored(model_path):
        return build_hub_model(model_path)
    command = _header_build_command(recipe_path)
    if command is not None:
        return build_composed_model(command)
    producer = _producing_recipe(model_path)
    if producer is not None and producer != recipe_path:
        return build_recipe_model(producer)
    raise ValueError(
        f"{recipe_path}: model_name_or_path {model_path!r} is not a stored checkpoint (add its config.json to "
        f"{CONFIG_DIR}), not built by a `#   vlmr build ...` line in the header, and no training recipe writes it "
        f"as output_dir"
    )


# ------------------------------------------------------------------------------------------------------
# The recipe's freeze flags and LoRA targets, through LLaMA-Factory
# ------------------------------------------------------------------------------------------------------

def parse_recipe_args(recipe: dict):
    """LLaMA-Factory's own parse of a training recipe: (model_args, data_args, training_args, finetuning_args).

    `deepspeed` is dropped (the planner reads the JSON itself: parsing it here would make transformers treat this
    process as a ZeRO-3 run) and `use_cpu` added (bf16 is then accepted without a GPU).
    """
    from llamafactory.hparams.parser import _parse_train_args

    args = {k: v for k, v in recipe.items() if k != "deepspeed"}
    model_args, data_args, training_args, finetuning_args, _ = _parse_train_args({**args, "use_cpu": True})
    return model_args, data_args, training_args, finetuning_args


@dataclass
class RealSize:
    """A training recipe's real-size model, as LLaMA-Factory would set it up for training."""

    recipe: Path
    model_description: str
    model_label: str
    model_class: str
    config: object  # the trained model's transformers config (the Thinker's for Omni)
    total_params: int  # of the trained model, LoRA adapters included
    trainable_params: int
    lora_params: int  # adapter weights (0 without LoRA)
    finetuning_type: str
    checks: list[PublishedCheck]
    frozen_keys: dict[str, int]  # composite-model key -> parameters it froze (get_forbidden_modules)
    lora_targets: list[str]  # module names LoRA wrapped, by their last component
    lora_wrapped: int  # number of wrapped modules
    lora_in_features: int  # sum of the wrapped modules' input widths (LoRA dropout keeps one copy of each input)
    lora_rank: int
    lora_dropout: float
    largest_layer_params: int  # parameters of the largest language-model decoder layer
    modules_to_save: list[str]
    image_tokens: int  # LM tokens per image at image_max_pixels (after the merger)
    vision_patches: int  # tokens the vision tower runs on per image (before the merger)
    image_size: tuple[int, int]  # (height, width) the image processor resizes a max-size square image to
    vision_keys: list[str] = field(default_factory=list)  # the composite model's vision-tower keys
    vision_trainable: int = 0  # trainable parameters under those keys
    projector_keys: list[str] = field(default_factory=list)  # the composite model's projector keys
    projector_trainable: int = 0  # trainable parameters under those keys (LoRA: only through modules_to_save)


def _largest_decoder_layer(model) -> int:
    """Parameters of the largest block of the language model (the ModuleList `...layers` holding the most)."""
    import torch

    stacks = [module for name, module in model.named_modules()
              if isinstance(module, torch.nn.ModuleList) and name.endswith("layers")]
    decoder = max(stacks, key=count_parameters)
    return max(count_parameters(layer) for layer in decoder)


def _composite(model):
    from llamafactory.model.model_utils.visual import COMPOSITE_MODELS

    return COMPOSITE_MODELS.get(getattr(model.config, "model_type", None))


def measure(recipe_path: str | Path, overrides: dict | None = None) -> RealSize:
    """Build `recipe_path`'s model on the meta device and apply its freeze flags / LoRA through LLaMA-Factory.

    `overrides` replace recipe keys, as `llamafactory-cli train RECIPE key=value` would. The result depends only on
    the recipe file and the overrides, so it is computed once per process for each (file version, overrides);
    callers must not modify it.
    """
    path = Path(recipe_path).resolve()
    return _measure(path, path.stat().st_mtime_ns, json.dumps(overrides or {}, sort_keys=True))


@lru_cache(maxsize=None)
def _measure(recipe_path: Path, mtime_ns: int, overrides_json: str) -> RealSize:
    import torch
    from llamafactory.model.adapter import init_adapter
    from llamafactory.model.model_utils.visual import get_forbidden_modules

    recipe = {**recipe_files.load(recipe_path), **json.loads(overrides_json)}
    if recipe_files.kind(recipe) != "train":
        raise ValueError(f"{recipe_path}: a {recipe_files.kind(recipe)} recipe; realsize measures training recipes")
    model_args, _, _, finetuning_args = parse_recipe_args(recipe)
    built = build_recipe_model(recipe_path, recipe)
    model = built.model
    forbidden = sorted(get_forbidden_modules(model.config, finetuning_args))
    frozen_keys = {key: count_parameters(model, name_contains=key) for key in forbidden}
    with torch.device("meta"):  # LoRA matrices are created beside their meta base layers
        model = init_adapter(model.config, model, model_args, finetuning_args, is_trainable=True)

    lora_targets, lora_wrapped, lora_in_features, modules_to_save = [], 0, 0, []
    if finetuning_args.finetuning_type == "lora":
        peft_config = model.peft_config["default"]
        targets = peft_config.target_modules
        lora_targets = sorted({name.split(".")[-1] for name in ([targets] if isinstance(targets, str) else targets)})
        wrapped = [module for module in model.modules() if hasattr(module, "lora_A") and hasattr(module, "base_layer")]
        lora_wrapped = len(wrapped)
        lora_in_features = sum(module.base_layer.in_features for module in wrapped)
        modules_to_save = sorted(peft_config.modules_to_save or [])
    composite = _composite(built.model)
    vision_keys = list(composite.vision_model_keys) if composite else []
    projector_keys = list(composite.projector_keys) if composite else []
    height, width, patches, tokens = image_tokens(built, model_args, recipe.get("template"))
    return RealSize(
        recipe=recipe_path,
        model_description=built.description,
        model_label=built.label,
        model_class=type(built.model).__name__,
        config=built.model.config,
        total_params=count_parameters(model),
        trainable_params=count_parameters(model, trainable_only=True),
        lora_params=count_parameters(model, name_contains=".lora_"),
        finetuning_type=finetuning_args.finetuning_type,
        checks=built.checks,
        frozen_keys=frozen_keys,
        lora_targets=lora_targets,
        lora_wrapped=lora_wrapped,
        lora_in_features=lora_in_features,
        lora_rank=finetuning_args.lora_rank,
        lora_dropout=finetuning_args.lora_dropout,
        largest_layer_params=_largest_decoder_layer(built.model),
        modules_to_save=modules_to_save,
        image_tokens=tokens,
        vision_patches=patches,
        image_size=(height, width),
        vision_keys=vision_keys,
        vision_trainable=sum(count_parameters(model, trainable_only=True, name_contains=key) for key in vision_keys),
        projector_keys=projector_keys,
        projector_trainable=sum(count_parameters(model, trainable_only=True, name_contains=key)
                                for key in projector_keys),
    )


# ------------------------------------------------------------------------------------------------------
# Image tokens per image
# ------------------------------------------------------------------------------------------------------

def image_tokens(built: BuiltModel, model_args, template: str | None) -> tuple[int, int, int, int]:
    """(height, width, vision-tower patches, LM tokens) of one square image of `image_max_pixels` pixels.

    The recipe's template's mm_plugin pre-resizes it (LLaMA-Factory's image_max/min_pixels), then the checkpoint's
    image processor does its own arithmetic: Qwen's smart_resize to multiples of patch_size * merge_size within
    its min/max_pixels (one grid of (h/patch) x (w/patch) patches, merged merge_size^2 to one LM token), or
    LLaVA's fixed resize to the tower's image_size.
    """
    from llamafactory.data.template import TEMPLATES
    from PIL import Image

    if built.image_processor_of is None:  # Llava: a fixed-size tower, image_seq_length tokens per image
        vision = built.model.config.vision_config
        return vision.image_size, vision.image_size, built.model.config.image_seq_length, \
            built.model.config.image_seq_length
    from transformers import Qwen2VLImageProcessor

    facts = preprocessor_facts(built.image_processor_of)
    side = math.isqrt(model_args.image_max_pixels)
    image = TEMPLATES[template].mm_plugin._preprocess_image(
        Image.new("RGB", (side, side)), image_max_pixels=model_args.image_max_pixels,
        image_min_pixels=model_args.image_min_pixels,
    )
    processor = Qwen2VLImageProcessor(**facts)
    grid = processor(images=image, return_tensors="pt")["image_grid_thw"][0].tolist()  # [t, h/patch, w/patch]
    patches = grid[0] * grid[1] * grid[2]
    patch = facts["patch_size"]
    return grid[1] * patch, grid[2] * patch, patches, patches // facts["merge_size"] ** 2


# ------------------------------------------------------------------------------------------------------
# vlmr realsize
# ------------------------------------------------------------------------------------------------------

def report(size: RealSize) -> str:
    """Human-readable lines for one recipe."""
    lines = [
        f"{size.recipe}",
        f"  model            {size.model_description} ({size.model_class}, {size.finetuning_type})",
        f"  parameters       {size.total_params:,} total, {size.trainable_params:,} trainable "
        f"({100 * size.trainable_params / size.total_params:.2f}%)"
        + (f", {size.lora_params:,} in LoRA adapters" if size.lora_params else ""),
    ]
    for check in size.checks:
        lines.append(f"  vs published     {check.what}: {check.ours:,} vs {check.published:,} "
                     f"({check.published_as}) -> {check.relative_error:+.3%}")
    frozen = ", ".join(f"{key} ({n:,})" for key, n in size.frozen_keys.items()) or "none"
    lines.append(f"  frozen keys      {frozen}")
    if size.lora_targets:
        lines.append(f"  LoRA targets     {', '.join(size.lora_targets)} ({size.lora_wrapped} modules)")
    if size.modules_to_save:
        lines.append(f"  trained in full  {', '.join(size.modules_to_save)} (modules_to_save)")
    lines.append(f"  image tokens     {size.image_tokens} per image at {size.image_size[0]}x{size.image_size[1]} px "
                 f"({size.vision_patches} vision-tower patches)")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipes", nargs="+", metavar="RECIPE|key=value",
                        help="training recipe(s), then recipe keys to override in each (e.g. lora_rank=16)")


def quiet_llamafactory() -> None:
    """Keep LLaMA-Factory's per-step INFO lines (it logs to stdout) out of our reports; set before its import."""
    os.environ.setdefault("LLAMAFACTORY_VERBOSITY", "WARN")


def run(args: argparse.Namespace) -> int:
    quiet_llamafactory()
    failed = 0
    overrides = recipe_files.parse_overrides([item for item in args.recipes if "=" in item])
    for path in (Path(item) for item in args.recipes if "=" not in item):
        size = measure(path, overrides)
        print(report(size))
        failed += sum(abs(check.relative_error) > TOLERANCE for check in size.checks)
    if failed:
        print(f"{failed} parameter count(s) differ from the published count by more than {TOLERANCE:.1%}")
    return 1 if failed else 0
