"""`vlmr convert SOURCE --input RAW [--out DIR] [--split S] [--seed N] [--max-pixels N] [--strict]
[--format jsonl|parquet] [--name NAME]`: one raw public dataset split -> a registered ShareGPT dataset.

`SOURCES` maps a source name to its converter module. A converter module documents its raw format, defines
`DEFAULT_NAME`, `iter_records(input, *, images, seed, split, **options)` and optionally
`add_arguments(parser)` for its own options (passed to `iter_records` as keyword arguments).

The split is one of `train`, `validation`, `test` (aliases and the source's own names accepted, listed in each
source's `--help`: data_converters/splits.py) and is registered in `<dataset-dir>/dataset_info.json` as
`<name>_<split>` (or printed with `--print-entry`). Exit status: 0 on success, 1 when `--strict` met a bad record,
2 when the input is unusable, the split unknown or empty (then nothing is written or registered).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from types import ModuleType

from tqdm import tqdm

from vlmrecipes.data_converters import (
    affectnet,
    ai_challenger,
    coco_captions,
    ct,
    fer2013,
    image_folder,
    llava,
    medtrinity,
    minimind,
    pathvqa,
    slake,
    splits,
    vqa_rad,
    vqav2,
)
from vlmrecipes.data_converters.datasets import entry_for, register
from vlmrecipes.data_converters.readers import SourceError
from vlmrecipes.data_converters.writer import EmptySplitError, StrictError, WriteOptions, write_split
from vlmrecipes.paths import DATASET_DIR

# source -> (converter module, one-line help)
SOURCES: dict[str, tuple[ModuleType, str]] = {
    "llava": (llava, "LLaVA conversations: CC3M-595K chat.json, LLaVA-Instruct-150K, Chinese-LLaVA"),
    "coco-captions": (coco_captions, "COCO 2017 captions (captions_<split>2017.json)"),
    "vqav2": (vqav2, "VQAv2 questions + annotations, ten answers kept"),
    "ai-challenger": (ai_challenger, "AI Challenger 2017 Chinese captions"),
    "minimind-v": (minimind, "minimind-v pretrain/SFT (parquet, or legacy jsonl)"),
    "medtrinity": (medtrinity, "MedTrinity-25M filtered by modality (CT)"),
    "vqa-rad": (vqa_rad, "VQA-RAD, answer_type kept"),
    "slake": (slake, "SLAKE, answer_type kept"),
    "pathvqa": (pathvqa, "PathVQA (Hub parquet), answer_type kept"),
    "affectnet": (affectnet, "AffectNet face crops, 8 (or 7) expression labels"),
    "fer2013": (fer2013, "FER2013 48x48 pixel strings, 7 labels"),
    "image-folder": (image_folder, "generic ROOT/<class>/<image> classifier"),
    "ct": (ct, "CT volumes (DICOM series, NIfTI) to windowed, de-identified PNG slices"),
}


def _common_arguments() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--input", type=Path, required=True, help="the raw annotation file (or dataset folder)")
    common.add_argument("--images", type=Path, help="image folder (default: the source's usual place beside --input)")
    common.add_argument("--out", type=Path, help="output folder (default: <dataset-dir>/<name>)")
    common.add_argument("--name", help="dataset name; the split registers as <name>_<split>")
    common.add_argument("--seed", type=int, default=0, help="seed of every random choice (same seed, same bytes)")
    common.add_argument("--max-pixels", type=int, help="resize images to at most this many pixels "
                                                       "(the recipe's image_max_pixels)")
    common.add_argument("--strict", action="store_true", help="exit non-zero at the first record that would be skipped")
    common.add_argument("--format", dest="fmt", choices=["jsonl", "parquet"], default="jsonl",
                        help="parquet embeds the image bytes (no media folder)")
    common.add_argument("--media", choices=["copy", "reference"], default="copy",
                        help="copy: decode, check and store images under <out>/media; reference: only check they "
                             "exist and write absolute paths")
    common.add_argument("--dataset-dir", type=Path, default=DATASET_DIR, help="where dataset_info.json lives")
    common.add_argument("--print-entry", action="store_true",
                        help="print the dataset_info.json entry instead of registering it")
    return common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = _common_arguments()
    sub = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    for name, (module, help_text) in SOURCES.items():
        source_parser = sub.add_parser(name, help=help_text, parents=[common], description=help_text)
        source_parser.add_argument("--split", default="train",
                                   help=f"{splits.describe(module)}; output <split>.jsonl (default train)")
        before = {a.dest for a in source_parser._actions}
        if hasattr(module, "add_arguments"):
            module.add_arguments(source_parser)
        source_parser.set_defaults(_source_options=[a.dest for a in source_parser._actions if a.dest not in before])


def run(args: argparse.Namespace) -> int:
    module = SOURCES[args.source][0]
    name = args.name or module.DEFAULT_NAME
    try:
        split = splits.resolve(args.split, module)
    except ValueError as exc:
        print(f"error: vlmr convert {args.source}: {exc}", file=sys.stderr)
        return 2
    dataset_dir = args.dataset_dir.resolve()
    out = (args.out or dataset_dir / name).resolve()
    # Paths relative to the dataset dir resolve with LLaMA-Factory's default media_dir (= dataset_dir).
    media_root = dataset_dir if out.is_relative_to(dataset_dir) else out
    options = {dest: getattr(args, dest) for dest in args._source_options}
    records = tqdm(module.iter_records(args.input, images=args.images, seed=args.seed, split=split, **options),
                   desc=f"convert {args.source}", unit=" records", disable=None)  # a bar on terminals only
    opts = WriteOptions(out_dir=out, split=split, media_root=media_root, fmt=args.fmt, media=args.media,
                        max_pixels=args.max_pixels, strict=args.strict, source=f"{args.source}:{args.input}")
    try:
        report = write_split(records, opts)
    except StrictError as exc:
        print(f"error (--strict): {exc}", file=sys.stderr)
        return 1
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except EmptySplitError as exc:
        print(f"error: {exc}; {args.source} has {splits.describe(module)}; nothing written or registered",
              file=sys.stderr)
        with contextlib.suppress(OSError):  # the output folder this run created, if it stayed empty
            out.rmdir()
        return 2
    print(report.summary())
    entry_name, entry = f"{name}_{split}", entry_for(report.output, dataset_dir)
    if args.print_entry:
        print(json.dumps({entry_name: entry}, indent=2, ensure_ascii=False))
    else:
        print(f"registered {entry_name} in {register(dataset_dir, entry_name, entry)}")
    if media_root != dataset_dir:
        print(f"note: image paths are relative to {media_root}; train with `media_dir: {media_root}`")
    return 0
