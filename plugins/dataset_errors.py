"""Fix: a record LLaMA-Factory 0.9.5 cannot preprocess stops training with an error that names no record.

LLaMA-Factory decodes every image while it preprocesses the dataset (`data/loader.py`
`_get_preprocessed_dataset` runs `dataset.map(processor.preprocess_dataset)`, whose `_encode_data_example` calls
`mm_plugin.process_messages`: `_regularize_images`, then transformers' image processor for the token count).
A truncated PNG, a zero-byte or HTML file saved as `.png`, a decompression bomb or a record with more
`<image>` placeholders than images then ends `llamafactory-cli train` with a bare traceback from deep inside
`datasets`: `OSError: image file is truncated`, `UnidentifiedImageError: cannot identify image file
'/data/media/000123.png'`, `ValueError: The number of images does not match the number of <image> tokens in
[...]`: no dataset, no line, no fix, after the model download and tokenizer load.

Every processor's `_encode_data_example` (supervised, packed, unsupervised, pairwise, feedback) is wrapped so
that any error becomes a `DatasetRecordError` naming the dataset, the file and line of the record (found by
searching the dataset files for its image paths and first prompt, only once something failed), what is wrong
(our image loader's reason, `plugins/image_decode.py`) and the fix: `vlmr validate NAME`.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from vlmrecipes.data_converters.images import ImageError, source_name

TEXT_SUFFIXES = (".json", ".jsonl")  # files searched line by line (Parquet rows have no line to show)


class DatasetRecordError(ValueError):
    """A record LLaMA-Factory cannot preprocess, with its dataset, file and line, and the fix."""


def patch_dataset_processors(processor_package) -> None:
    """Wrap `_encode_data_example` of each processor class that defines one (the packed one inherits it)."""
    for name in processor_package.__all__:
        processor_class = getattr(processor_package, name)
        if "_encode_data_example" in vars(processor_class):
            processor_class._encode_data_example = _naming_the_record(processor_class._encode_data_example)


def _naming_the_record(encode):
    @functools.wraps(encode)
    def _encode_data_example(self, *args, **kwargs):
        try:
            return encode(self, *args, **kwargs)
        except DatasetRecordError:
            raise
        except Exception as exc:  # Pillow, transformers' image processor, LLaMA-Factory's own ValueErrors
            raise DatasetRecordError(describe_failure(self.data_args, kwargs, exc)) from exc

    return _encode_data_example


def describe_failure(data_args, example: dict[str, Any], exc: Exception) -> str:
    """One paragraph: where the record is, what is wrong with it, and the fix."""
    images = example.get("images") or []
    prompt = example.get("prompt") or []
    first_text = prompt[0].get("content") if prompt and isinstance(prompt[0], dict) else None
    found = locate_record(data_args, images, first_text)
    if found:
        name, path, line = found
        names = [name]
        where = f"dataset {name!r}, record at {path}:{line}" if line else f"dataset {name!r}, a record in {path}"
    else:
        names = _dataset_names(data_args) or ["NAME"]
        where = (f"a record of dataset {' or '.join(map(repr, names))} (images: "
                 f"{', '.join(source_name(i) for i in images) or 'none'})")
    what = (str(exc) if isinstance(exc, ImageError) else f"{type(exc).__name__}: {exc}").rstrip(".")
    if len(what) > 400:  # LLaMA-Factory's image-count error quotes the whole conversation
        what = what[:400] + " ..."
    options = f" --dataset-dir {data_args.dataset_dir}"
    if os.path.abspath(data_args.media_dir) != os.path.abspath(data_args.dataset_dir):
        options += f" --media-dir {data_args.media_dir}"
    commands = " and ".join(f"`vlmr validate {name}{options}`" for name in names)
    return f"{where}: {what}. Run {commands} to list every record LLaMA-Factory cannot load, before training again."


def _dataset_names(data_args) -> list[str]:
    return [*(data_args.dataset or []), *(data_args.eval_dataset or [])]


def locate_record(data_args, images: list[Any], first_text: str | None) -> tuple[str, Path, int | None] | None:
    """(dataset name, file, line) of the record with these images and first prompt; line None if not found."""
    from llamafactory.data.parser import get_dataset_list

    names = _dataset_names(data_args)
    try:
        attributes = get_dataset_list(names, data_args.dataset_dir)
    except Exception:  # an unreadable dataset_info.json: LLaMA-Factory already reported it at load time
        return None
    paths = [i.get("path") if isinstance(i, dict) else i for i in images]
    image_needles = [_json_forms(p, os.path.relpath(p, data_args.media_dir) if os.path.isabs(p) else p)
                     for p in paths if isinstance(p, str)]
    text_needles = _json_forms(first_text) if isinstance(first_text, str) else []
    # Several records can share an image (VQA: many questions per picture): match the question too, if it was
    # written verbatim (ShareGPT), else the images alone.
    for needles in ([*image_needles, text_needles], image_needles):
        if not any(needles):
            continue
        for name, attributes_of in zip(names, attributes):
            if attributes_of.load_from != "file":
                continue
            for path in _files(Path(data_args.dataset_dir) / attributes_of.dataset_name):
                line = _first_line_with_all(path, [n for n in needles if n])
                if line:
                    return name, path, line
    files = [(n, a) for n, a in zip(names, attributes) if a.load_from == "file"]
    if len(files) == 1:  # one local dataset: it holds the record even if its line was not found
        return files[0][0], Path(data_args.dataset_dir) / files[0][1].dataset_name, None
    return None


def _json_forms(*texts: str) -> list[str]:
    """How each text can appear inside a JSON string (escaped; non-ASCII raw or as \\u escapes)."""
    return sorted({json.dumps(t, ensure_ascii=ascii)[1:-1] for t in texts for ascii in (True, False)})


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.suffix in TEXT_SUFFIXES) if path.is_dir() else [path]


def _first_line_with_all(path: Path, needles: list[list[str]]) -> int | None:
    """The first line (1-based) containing one form of every needle."""
    if path.suffix not in TEXT_SUFFIXES:
        return None
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if all(any(form in line for form in forms) for forms in needles):
                return lineno
    return None
