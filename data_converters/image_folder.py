"""A generic image-folder classifier (torchvision `ImageFolder` layout): one sub-folder per class.

Raw format:

    ROOT/cat/0001.jpg
    ROOT/cat/0002.png
    ROOT/dog/0001.jpg

Output: a closed-set question listing the classes (sorted folder names, underscores read as spaces) built
from `--prompt` ({classes} and {subject} are filled in), answer = the class, `label` kept. Files are visited
in sorted order; hidden files are ignored; unreadable images are skipped with their reason.
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
