"""A generic image-folder classifier (torchvision `ImageFolder` layout): one sub-folder per class.

Raw format:

    ROOT/cat/0001.jpg
    ROOT/cat/0002.png
    ROOT/dog/0001.jpg

Output: a closed-set question listing the classes (sorted folder names, underscores read as spaces) built
from `--prompt` ({classes} and {subject} are filled in), answer = the class, `label` kept. Files are visited
in sorted order; hidden files are ignored; unreadable images are skipped with their reason.

High-bit-depth images (16-bit greyscale PNG/TIFF exports of CT or X-ray, 32-bit integer or float TIFF) reach
the model as 8-bit by one rule, their own range (min -> 0, max -> 255; `images.model_image`): `--media copy`
(the default) writes them so, as 8-bit PNGs; `--media reference` keeps the original files, and LLaMA-Factory's
loader, patched by this plugin (`plugins/image_decode.py`), applies the same rule when it loads them.
`vlmr validate` reports each such image as rescaled (without the plugin loaded: as clipped, an error). For a
calibrated window (CT Hounsfield units) window the images to 8 bits yourself, or start from the DICOM/NIfTI
files with `vlmr convert ct`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from vlmrecipes.data_converters.readers import SourceError
from vlmrecipes.data_converters.schema import ImageRef, Record
from vlmrecipes.data_converters.tasks import CLASSIFY_PROMPT, classification_sample

DEFAULT_NAME = "image_folder"


def add_arguments(parser) -> None:
    parser.add_argument("--prompt", default=CLASSIFY_PROMPT, help="question template with {classes} and {subject}")
    parser.add_argument("--subject", default="shown", help="what is asked about, e.g. 'the animal'")


def iter_records(input: Path, *, images: Path | None, seed: int, split: str, prompt: str = CLASSIFY_PROMPT,
                 subject: str = "shown") -> Iterator[Record]:
    folders = sorted(p for p in input.iterdir() if p.is_dir() and not p.name.startswith(".")) if input.is_dir() else []
    if not folders:
        raise SourceError(f"{input}: no class sub-folders: expected ROOT/<class>/<image files>")
    classes = [f.name.replace("_", " ") for f in folders]
    for folder, label in zip(folders, classes):
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
            name = path.relative_to(input).as_posix()
            yield classification_sample(name, ImageRef(path, name), label, classes, subject, prompt)
