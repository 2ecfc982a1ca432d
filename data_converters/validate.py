"""`vlmr validate DATASET_NAME_OR_FILE` and `vlmr stats RECIPE`: a ShareGPT dataset as LLaMA-Factory sees it.

validate checks every record (JSON Lines, or Parquet with embedded images) and prints one line per problem,
`FILE:LINE: problem: fix`; exit status 1 when there is any error:
- UTF-8 bytes, JSON syntax; roles alternate user/assistant, no empty turn, one `<image>` per image
  (`schema.check_messages`, LLaMA-Factory's own rules); `<image>` written inside an assistant/system turn;
- every image: no absolute path, no `../` escape and no symlink leaving the media dir (unless
  `--allow-absolute`), then decoded by LLaMA-Factory's own loader (`ImageChecker`: the recipe template's
  `mm_plugin._regularize_images` with its `image_max_pixels`/`image_min_pixels`), so what is checked is the
  image the model is fed, pixel for pixel. Errors: it cannot be loaded (missing, empty, truncated, not an
  image, a decompression bomb), or a 16/32-bit image is clipped to white or black because the vlm-recipes
  patch is not loaded. Warnings (`FILE:LINE: warning: ...`, exit status unchanged): a 16/32-bit image
  rescaled to 8 bits by its own range, or an image fed as over 99% pure white or black.
With `--recipe`, the record's token length is computed with the recipe's real tokenizer, processor, template
and mm_plugin (LLaMA-Factory's `SupervisedDatasetProcessor` path: `process_messages` expands each `<image>` to
its image tokens, then `encode_multiturn`), and records longer than `cutoff_len` are counted: LLaMA-Factory
would silently cut them (image tokens included, which breaks the image/feature count).

stats prints the token-length distribution of a recipe's datasets and recommends a cutoff_len.

Both take the recipe's `key=value` overrides as `llamafactory-cli train RECIPE key=value ...` does
(`vlmr validate DS --recipe R model_name_or_path=/models/qwen`, one parser: `recipes.parse_overrides`). A model that
is neither a local folder, nor in the Hugging Face cache, nor downloadable now (`HF_HUB_OFFLINE=1`, no network) is one
error line naming the fix before any record is read (`vlmrecipes.hub`), not a minute of retries and a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from vlmrecipes import hub, packing, recipes
from vlmrecipes.data_converters.datasets import SHAREGPT_TAGS, DatasetError, DatasetFile, iter_rows, resolve
from vlmrecipes.data_converters.images import HIGH_BIT_DEPTH_MODES, RESCALED_KEY, ImageError, classify, source_name
from vlmrecipes.data_converters.schema import IMAGE_TOKEN, check_messages
from vlmrecipes.paths import DATASET_DIR

CUTOFF_STEP = 256  # recommended cutoff_len is rounded up to a multiple of this


def _normalized(record: dict, ds: DatasetFile) -> tuple[Any, list]:
    """messages as role/content with user/assistant/system roles (dataset_info tags mapped), and images."""
    tags = {**SHAREGPT_TAGS, **(ds.tags or {})}
    roles = {tags["user_tag"]: "user", tags["assistant_tag"]: "assistant", tags["system_tag"]: "system"}
    raw = record.get(ds.messages)
    def role(turn: dict) -> Any:
        value = turn.get(tags["role_tag"])
        return roles.get(value, value) if isinstance(value, str) else value  # non-str roles are reported later

    messages = [{"role": role(t), "content": t.get(tags["content_tag"])} if isinstance(t, dict) else t
                for t in raw] if isinstance(raw, list) else raw
    images = record.get(ds.images) or []
    return messages, images if isinstance(images, list) else [images]


class ImageChecker:
    """Decodes images with LLaMA-Factory's own loader: the recipe template's `mm_plugin._regularize_images` with
    the recipe's `image_max_pixels` / `image_min_pixels` (LLaMA-Factory's defaults without a recipe), i.e. the
    exact RGB image the image processor receives in training, with our patch when the plugin is loaded."""

    def __init__(self, recipe: dict[str, Any] | None = None):
        # LLaMA-Factory's log handler, created on its first import, writes to the sys.stdout of that moment: point
        # it at stderr, so that stdout holds validate's report alone.
        with contextlib.redirect_stdout(sys.stderr):
            from llamafactory.data.mm_plugin import get_mm_plugin
            from llamafactory.data.template import TEMPLATES
            from llamafactory.hparams import ModelArguments

        recipe = recipe or {}
        name = recipe.get("template")
        if name is not None and name not in TEMPLATES:
            raise ValueError(f"the recipe's template {name!r} is not a LLaMA-Factory template: fix `template`")
        self.plugin = TEMPLATES[name].mm_plugin if name else get_mm_plugin("base")
        defaults = {f.name: f.default for f in fields(ModelArguments) if f.name in PIXEL_LIMITS}
        self.pixel_limits = {key: int(recipe.get(key, defaults[key])) for key in PIXEL_LIMITS}

    def decode(self, source: Any) -> Any:
        """The PIL RGB image LLaMA-Factory feeds the image processor for `source` (path str, bytes or dict)."""
        return self.plugin._regularize_images([source], **self.pixel_limits)["images"][0]

    def check(self, source: Any, name: str) -> tuple[str | None, str | None]:
        """(error, warning) for one image: what LLaMA-Factory cannot load, or what it loads lossily."""
        try:
            image = self.decode(source)
        except ImageError as exc:  # our patch of the loader names the reason and the fix
            return f"{exc.reason}: {exc.detail}", None
        except Exception as exc:  # the unpatched loader raises Pillow's own errors
            error = classify(exc, name, source)
            return f"{error.reason}: {error.detail}", None
        rescaled = image.info.get(RESCALED_KEY)
        if rescaled:
            mode, value_range = rescaled.split(" ")
            return None, (f"{name}: {mode} image (values {value_range}) rescaled by its own range to 8 bits for the "
                          "model, so its contrast depends on each image's min and max: for a calibrated window "
                          "(CT: Hounsfield units) window it to 8 bits yourself or use `vlmr convert ct`")
        pixels = np.asarray(image)  # (H, W, 3) uint8
        white, black = (float((pixels == value).all(axis=-1).mean()) for value in (255, 0))
        mode = _source_mode(source)
        if mode in HIGH_BIT_DEPTH_MODES:  # decoded without our rescale: the loader is upstream's
            return (f"clipped_image: {name}: LLaMA-Factory clips the samples of this {mode} image to 0..255 "
                    f"({white:.1%} of the pixels pure white, {black:.1%} pure black) because the vlm-recipes plugin "
                    "is not loaded (run `vlmr doctor`; `vlmr install-hook` for an editable install), or window it "
                    "to 8 bits yourself (`vlmr convert ct` for CT)"), None
        for share, colour in ((white, "white"), (black, "black")):
            if share > DEGENERATE_SHARE:
                return None, (f"{name}: LLaMA-Factory feeds this image to the model {share:.1%} pure {colour}: if that "
                              "is not its content, re-export it as an 8-bit PNG or JPEG")
        return None, None


PIXEL_LIMITS = ("image_max_pixels", "image_min_pixels")
# Above this share of pure white (or black) pixels an image is reported: what clipping produces (99.6% for a
# 16-bit 0..60000 ramp), and rare for real content.
DEGENERATE_SHARE = 0.99


def _source_mode(source: Any) -> str | None:
    """The Pillow mode of the file as stored (header only)."""
    from PIL import Image

    try:
        data = source.get("bytes") if isinstance(source, dict) else None
        with Image.open(io.BytesIO(data) if data is not None else source) as img:
            return img.mode
    except Exception:  # unreadable: already reported by the decode
        return None


def image_source(image: Any, media_dir: Path, allow_absolute: bool) -> tuple[Any, str | None]:
    """(what LLaMA-Factory's loader is given for this image entry, or None; why it is unusable, with the fix)."""
    if isinstance(image, dict):  # Parquet: embedded bytes
        if image.get("bytes") is None:
            return None, "image entry has no bytes: re-convert with --format parquet"
        return image, None
    if not isinstance(image, str):
        return None, f"image entry {image!r:.60} is not a path"
    rel = Path(image)
    if not allow_absolute and (rel.is_absolute() or ".." in rel.parts):
        return None, (f"image path {image} is absolute or escapes the media dir: make it relative to {media_dir} "
                      "(or pass --allow-absolute)")
    source = rel if rel.is_absolute() else media_dir / rel
    if not allow_absolute and source.exists() and not source.resolve().is_relative_to(media_dir.resolve()):
        return None, f"image {image} is a symlink leaving {media_dir}: copy the file in (or pass --allow-absolute)"
    return str(source), None  # a str: LLaMA-Factory opens str paths, not Path objects


@dataclass
class Report:
    """Records checked, and the problem lines in file order (errors and `warning:` lines)."""

    count: int = 0
    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def error(self, line: str) -> None:
        self.lines.append(line)
        self.errors.append(line)

    def warn(self, line: str) -> None:
        self.lines.append(line)
        self.warnings.append(line)


def validate(ds: DatasetFile, media_dir: Path, allow_absolute: bool = False) -> tuple[int, list[str]]:
    """(records checked, error lines), images decoded with LLaMA-Factory's default settings."""
    report = check_dataset(ds, media_dir, allow_absolute, ImageChecker())
    return report.count, report.errors


def check_dataset(ds: DatasetFile, media_dir: Path, allow_absolute: bool, checker: ImageChecker) -> Report:
    """Every record of `ds`, its images decoded by `checker`."""
    report = Report()
    for lineno, record in tqdm(iter_rows(ds.path), desc=f"validate {ds.path.name}", unit=" records", disable=None):
        report.count += 1
        where = f"{ds.path}:{lineno}"
        if isinstance(record, DatasetError):
            report.error(str(record))
            continue
        if not isinstance(record, dict):
            report.error(f"{where}: not a JSON object")
            continue
        messages, images = _normalized(record, ds)
        # Checked before the placeholder count, which it would otherwise surface as a confusing mismatch.
        misplaced = [t.get("role") for t in messages if isinstance(t, dict) and t.get("role") != "user"
                     and IMAGE_TOKEN in str(t.get("content"))] if isinstance(messages, list) else []
        if misplaced:
            report.error(f"{where}: {IMAGE_TOKEN} written inside a {misplaced[0]} turn: LLaMA-Factory would "
                                 "treat it as an image; remove or rephrase it")
            continue
        problem = check_messages(messages, len(images))
        if problem:
            report.error(f"{where}: {problem[0]}: {problem[1]}")
            continue
        for image in images:
            source, error = image_source(image, media_dir, allow_absolute)
            warning = None
            if source is not None:
                error, warning = checker.check(source, image if isinstance(image, str) else source_name(image))
            if error:
                report.error(f"{where}: {error}")
            if warning:
                report.warn(f"{where}: warning: {warning}")
    return report


# ------------------------------------------------------------------------------------------------------
# token lengths with the recipe's real processor and template
# ------------------------------------------------------------------------------------------------------


class TokenCounter:
    """Token length of a record exactly as LLaMA-Factory's supervised preprocessing computes it (before cutoff)."""

    def __init__(self, recipe: dict[str, Any]):
        from llamafactory.data import get_template_and_fix_tokenizer
        from llamafactory.hparams import DataArguments, ModelArguments
        from llamafactory.model import load_tokenizer

        def pick(cls):
            return cls(**{f.name: recipe[f.name] for f in fields(cls) if f.name in recipe and f.init})

        self.model_args, self.data_args = pick(ModelArguments), pick(DataArguments)
        module = load_tokenizer(self.model_args)
        self.tokenizer, self.processor = module["tokenizer"], module["processor"]
        self.template = get_template_and_fix_tokenizer(self.tokenizer, self.data_args)

    def length(self, messages: list[dict[str, str]], images: list[Any], media_dir: Path) -> int:
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
        turns = messages[1:] if system is not None else messages
        paths = [str(media_dir / i) if isinstance(i, str) and not os.path.isabs(i) else i for i in images]
        # LLaMA-Factory's mm_plugin reads these from the processor (set by `load_tokenizer` from model_args).
        expanded = self.template.mm_plugin.process_messages(turns, paths, [], [], self.processor)
        input_ids, _ = self.template.mm_plugin.process_token_ids([], [], paths, [], [], self.tokenizer, self.processor)
        pairs = self.template.encode_multiturn(self.tokenizer, expanded, system, None)
        return len(input_ids) + sum(len(s) + len(t) for s, t in pairs) + (1 if self.template.efficient_eos else 0)


def token_lengths(recipe: dict[str, Any], ds: DatasetFile, media_dir: Path) -> list[int]:
    counter = TokenCounter(recipe)
    lengths = []
    for _, record in tqdm(iter_rows(ds.path), desc=f"token lengths {ds.path.name}", unit=" records", disable=None):
        if isinstance(record, dict):
            messages, images = _normalized(record, ds)
            if check_messages(messages, len(images)) is None:
                lengths.append(counter.length(messages, images, media_dir))
    return lengths


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile (the smallest value with at least q% of the data at or below it)."""
    return sorted_values[max(0, math.ceil(q / 100 * len(sorted_values)) - 1)]


def recommend_cutoff(lengths: list[int]) -> int:
    """The 99th percentile rounded up to a multiple of CUTOFF_STEP: cuts at most 1% of samples."""
    return max(CUTOFF_STEP, math.ceil(percentile(sorted(lengths), 99) / CUTOFF_STEP) * CUTOFF_STEP)


# ------------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------------


OVERRIDES_HELP = "recipe keys to override, as after `llamafactory-cli train RECIPE` (e.g. model_name_or_path=/path)"


def _recipe(path: Path, pairs: list[str]) -> dict[str, Any]:
    """The recipe with its `key=value` overrides; ModelUnavailable (one line, with the fix) when its model can be
    neither found locally nor downloaded now, before anything waits on the Hub."""
    recipe = recipes.load(path, recipes.parse_overrides(pairs))
    hub.require_model(str(recipe.get("model_name_or_path")))
    return recipe


def add_validate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="a dataset name from dataset_info.json, or a .jsonl/.parquet file")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="with --recipe: " + OVERRIDES_HELP)
    parser.add_argument("--dataset-dir", type=Path, default=DATASET_DIR)
    parser.add_argument("--media-dir", type=Path, help="where relative image paths resolve (default: dataset dir)")
    parser.add_argument("--recipe", type=Path,
                        help="count samples over the recipe's cutoff_len (image tokens included)")
    parser.add_argument("--allow-absolute", action="store_true", help="accept absolute, ../ and symlinked image paths")
    parser.parse_args = parser.parse_intermixed_args  # overrides may follow the options, as with llamafactory-cli


def run_validate(args: argparse.Namespace) -> int:
    if args.overrides and not args.recipe:
        print(f"error: {' '.join(args.overrides)}: key=value overrides apply to a recipe: add --recipe RECIPE",
              file=sys.stderr)
        return 2
    try:
        recipe = _recipe(args.recipe, args.overrides) if args.recipe else None
        ds = resolve(args.dataset, args.dataset_dir)
        checker = ImageChecker(recipe)
        media_dir = args.media_dir or args.dataset_dir
        report = check_dataset(ds, media_dir, args.allow_absolute, checker)
    except (hub.ModelUnavailable, recipes.RecipeError) as exc:  # before any record is read
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # DatasetError: the dataset or its entry; a recipe naming no LLaMA-Factory template
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in report.lines:
        print(line)
    print(f"{ds.path}: {report.count} records, {len(report.errors)} errors, {len(report.warnings)} warnings")
    if recipe and not report.errors:
        cutoff = int(recipe.get("cutoff_len", 2048))
        lengths = token_lengths(recipe, ds, media_dir)
        over = sum(length > cutoff for length in lengths)
        print(f"{over} of {len(lengths)} records exceed cutoff_len {cutoff} (longest {max(lengths, default=0)} "
              f"tokens, image tokens included)" + (f": raise cutoff_len to {recommend_cutoff(lengths)} or "
                                                   "lower image_max_pixels" if over else ""))
    return 1 if report.errors else 0


def add_stats_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", type=Path, help="a training recipe YAML (its dataset, model and template)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDES_HELP)
    parser.add_argument("--dataset-dir", type=Path, help="overrides the recipe's dataset_dir")
    parser.parse_args = parser.parse_intermixed_args


def run_stats(args: argparse.Namespace) -> int:
    lengths = []
    try:
        recipe = _recipe(args.recipe, args.overrides)
        dataset_dir = args.dataset_dir or Path(recipe.get("dataset_dir") or DATASET_DIR)
        media_dir = Path(recipe.get("media_dir") or dataset_dir)
        for name in str(recipe["dataset"]).split(","):
            lengths += token_lengths(recipe, resolve(name.strip(), dataset_dir), media_dir)
    except (hub.ModelUnavailable, recipes.RecipeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not lengths:
        print("no valid record: run `vlmr validate` on the dataset")
        return 1
    ordered = sorted(lengths)
    cutoff = int(recipe.get("cutoff_len", 2048))
    print(f"{len(ordered)} records, tokens (image tokens included): min {ordered[0]} "
          + " ".join(f"p{q} {percentile(ordered, q)}" for q in (50, 90, 95, 99)) + f" max {ordered[-1]}")
    print(f"cutoff_len {cutoff}: {sum(n > cutoff for n in ordered)} records over; "
          f"recommended cutoff_len: {recommend_cutoff(ordered)}")
    # what one epoch computes at the recipe's batch size, padded to each micro-batch's longest vs packed
    for layout in packing.compare(lengths, recipe):
        print(packing.describe(layout))
    return 0
