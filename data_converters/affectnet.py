"""AffectNet (Mollahosseini et al. 2017): `training.csv` / `validation.csv` and `Manually_Annotated_Images/`.

Raw format: CSV with a header; the face box is in pixels of the full image; `expression` codes 0-10:

    subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal
    689/737db2483489148d783ef278f43f486c0a97e140fc4b6b61b84363ca.jpg,134,134,899,899,181.64;530.91;...,1,0.785714,-0.055556

Output: the face cropped with `--margin` (a fraction of the box size on each side, clamped to the image),
asked as a closed-set question over the 8 labels (`--classes 7` drops contempt); `label` kept. Codes 8/9/10
(None, Uncertain, No-Face) are policy skips (`filtered`), other codes `bad_label`; `--max-per-class N` caps
each class in file order (`over_class_cap`) for balance. The validation file serves as the test set.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from vlmrecipes.data_converters.images import ImageError, load_rgb
from vlmrecipes.data_converters.readers import iter_csv
from vlmrecipes.data_converters.schema import BAD_LABEL, FILTERED, MALFORMED, OVER_CLASS_CAP, ImageRef, Record, Skipped
from vlmrecipes.data_converters.tasks import classification_sample

DEFAULT_NAME = "affectnet"
LABELS = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
NON_EMOTION = {8: "None", 9: "Uncertain", 10: "No-Face"}
COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "expression")


def add_arguments(parser) -> None:
    parser.add_argument("--classes", type=int, choices=[7, 8], default=8, help="7: drop contempt (code 7)")
    parser.add_argument("--margin", type=float, default=0.2, help="crop margin as a fraction of the face box")
    parser.add_argument("--max-per-class", type=int, help="keep at most this many records per label")


def iter_records(input: Path, *, images: Path | None, seed: int, split: str, classes: int = 8, margin: float = 0.2,
                 max_per_class: int | None = None) -> Iterator[Record]:
    images_dir = images or input.parent / "Manually_Annotated_Images"
    labels = list(LABELS[:classes])
    kept: Counter = Counter()
    for lineno, row in iter_csv(input, COLUMNS):
        record_id = f"{input.name}:{lineno}"
        if isinstance(row, ValueError):
            yield Skipped(record_id, MALFORMED, str(row))
            continue
        try:
            code = int(row["expression"])
            x, y, w, h = (int(float(row[k])) for k in ("face_x", "face_y", "face_width", "face_height"))
        except (TypeError, ValueError):
            yield Skipped(record_id, MALFORMED, f"line {lineno}: expression and face box must be numbers")
            continue
        if code in NON_EMOTION or code == 7 and classes == 7:
            yield Skipped(record_id, FILTERED, f"expression {code} ({NON_EMOTION.get(code, 'Contempt')}) is not "
                                               f"one of the {classes} classes")
            continue
        if not 0 <= code < classes:
            yield Skipped(record_id, BAD_LABEL, f"line {lineno}: expression {code} is not an AffectNet code 0-10")
            continue
        label = labels[code]
        if max_per_class is not None and kept[label] >= max_per_class:
            yield Skipped(record_id, OVER_CLASS_CAP, f"{label} already has {max_per_class} records")
            continue
        name = row["subDirectory_filePath"]
        try:
            face = crop_face(load_rgb(images_dir / name).image, (x, y, w, h), margin)
        except ImageError as exc:
            yield Skipped(record_id, exc.reason, exc.detail)
            continue
        except ValueError as exc:
            yield Skipped(record_id, MALFORMED, f"line {lineno}: {exc}")
            continue
        kept[label] += 1
        yield classification_sample(record_id, ImageRef(face, name), label, labels, subject="the facial expression")


def crop_face(image, box: tuple[int, int, int, int], margin: float):
    """Crop (x, y, w, h) grown by `margin` x size on each side and clamped to the image."""
    x, y, w, h = box
    if w <= 0 or h <= 0:
        raise ValueError(f"face box {box} has no area")
    dx, dy = int(w * margin), int(h * margin)
    left, top = max(0, x - dx), max(0, y - dy)
    right, bottom = min(image.width, x + w + dx), min(image.height, y + h + dy)
    if right <= left or bottom <= top:
        raise ValueError(f"face box {box} lies outside the {image.width}x{image.height} image")
    return image.crop((left, top, right, bottom))
