"""`vlmr demo-data`: the bundled synthetic demo datasets (no copied images), one per task family.

Each is generated deterministically and written by the converters' one writer (`data_converters.writer`) into
`dataset_info/<name>/` as ShareGPT JSON Lines plus PNGs under `media/`, with train and test splits registered
in `dataset_info/dataset_info.json` as `<name>_train` / `<name>_test`. They are what `vlmr demo` learns and
what `vlmr smoke` feeds a recipe's tiny twin in place of the real dataset.

- demo_shapes (general VQA): a red/green/blue circle, square or triangle on a pink/cyan/beige background; asks
  the colour of the shape or of the background (chance 1/3 for each): the model must tell object from
  background and read colour from pixels.
- demo_ct (medical CT): a grey "slice" with a body outline and a bright lesion on the left or right, or none;
  closed (yes/no) and open (left/right/none) questions with `answer_type`.
- demo_emotion (facial expression): a schematic face whose mouth curves up, down or is flat; labels
  happy / sad / neutral, kept in `label`.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterator
from pathlib import Path

from vlmrecipes.data_converters.datasets import entry_for, register
from vlmrecipes.data_converters.schema import ImageRef, Sample, chat
from vlmrecipes.data_converters.writer import WriteOptions, write_split
from vlmrecipes.paths import DATASET_DIR

# 112 px -> 8x8 patches of 14 px -> 4x4 = 16 merged image tokens on Qwen2.5-VL: enough to tell shapes apart.
SHAPES_SIZE = 112
# CT and emotion images only need coarse layout: 64 px -> 4 or 6 image tokens keeps smoke runs fast.
IMAGE_SIZE = 64

COLORS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220)}
SHAPES = ("circle", "square", "triangle")
# pale tints, each lighter than every shape colour: the object and the background never share a colour name
BACKGROUNDS = {"pink": (250, 200, 220), "cyan": (200, 240, 250), "beige": (240, 230, 190)}


def _shapes_sample(rng: random.Random):
    """A coloured shape on a tinted background; asks the colour of the shape or of the background."""
    from PIL import Image, ImageDraw

    color, shape, background = rng.choice(list(COLORS)), rng.choice(SHAPES), rng.choice(list(BACKGROUNDS))
    tint = tuple(max(0, min(255, c + rng.randint(-12, 12))) for c in BACKGROUNDS[background])
    img = Image.new("RGB", (SHAPES_SIZE, SHAPES_SIZE), tint)
    draw = ImageDraw.Draw(img)
    r = rng.randint(SHAPES_SIZE // 5, SHAPES_SIZE // 3)
    cx, cy = rng.randint(r + 2, SHAPES_SIZE - r - 2), rng.randint(r + 2, SHAPES_SIZE - r - 2)
    fill = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in COLORS[color])
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    if rng.random() < 0.5:
        question, answer = f"What color is the {shape}? Answer with one word.", color
    else:
        question, answer = "What color is the background? Answer with one word.", background
    return img, question, answer, {}


def _ct_sample(rng: random.Random):
    from PIL import Image, ImageDraw

    img = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    draw = ImageDraw.Draw(img)
    draw.ellipse([6, 10, IMAGE_SIZE - 6, IMAGE_SIZE - 10], fill=rng.randint(70, 100))  # body outline
    side = rng.choice(["left", "right", "none"])
    if side != "none":
        # Radiological convention: the patient's left is on the image's right.
        cx = IMAGE_SIZE * 3 // 4 if side == "left" else IMAGE_SIZE // 4
        cy, r = IMAGE_SIZE // 2 + rng.randint(-8, 8), rng.randint(5, 8)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=rng.randint(200, 255))
    if rng.random() < 0.5:
        question, answer, kind = "Is there a lesion in this CT slice?", ("no" if side == "none" else "yes"), "CLOSED"
    else:
        question, answer, kind = "On which side is the lesion? Answer left, right or none.", side, "OPEN"
    return img.convert("RGB"), question, answer, {"answer_type": kind}


def _emotion_sample(rng: random.Random):
    from PIL import Image, ImageDraw

    label = rng.choice(["happy", "sad", "neutral"])
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), tuple(rng.randint(180, 230) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    skin = (rng.randint(200, 255), rng.randint(160, 210), rng.randint(120, 170))
    draw.ellipse([6, 4, IMAGE_SIZE - 6, IMAGE_SIZE - 4], fill=skin)
    for ex in (22, 42):
        draw.ellipse([ex - 3, 22, ex + 3, 28], fill=(20, 20, 20))
    box = [18, 34, 46, 52]
    if label == "happy":
        draw.arc(box, 20, 160, fill=(120, 0, 0), width=3)
    elif label == "sad":
        draw.arc([18, 44, 46, 62], 200, 340, fill=(120, 0, 0), width=3)
    else:
        draw.line([20, 46, 44, 46], fill=(120, 0, 0), width=3)
    question = "Which emotion does this face show? Answer with one word."
    return img, question, label, {"label": label}


DEMO_DATASETS = {
    "demo_shapes": (_shapes_sample, 3000, 100),
    "demo_ct": (_ct_sample, 120, 40),
    "demo_emotion": (_emotion_sample, 120, 40),
}


def _samples(name: str, split: str, count: int, rng: random.Random) -> Iterator[Sample]:
    make = DEMO_DATASETS[name][0]
    for i in range(count):
        img, question, answer, extra = make(rng)
        yield Sample(f"{name}_{split}_{i:04d}", chat(question, answer), [ImageRef(img, f"{split}_{i:04d}.png")], extra)


def generate(name: str, dataset_dir: Path = DATASET_DIR, seed: int = 0) -> dict[str, Path]:
    """Write and register `<dataset_dir>/<name>/{train,test}.jsonl` and their images; returns split -> file."""
    _, n_train, n_test = DEMO_DATASETS[name]
    rng = random.Random(f"{name}-{seed}")  # one stream for both splits: test images follow the train ones
    files = {}
    for split, count in (("train", n_train), ("test", n_test)):
        # strict: a generated sample the writer would skip is a bug here, not a record to drop
        opts = WriteOptions(out_dir=dataset_dir / name, split=split, media_root=dataset_dir, strict=True,
                            source=f"vlmr demo-data {name}")
        files[split] = write_split(_samples(name, split, count, rng), opts).output
        register(dataset_dir, f"{name}_{split}", entry_for(files[split], dataset_dir))
    return files


def generate_all(dataset_dir: Path = DATASET_DIR) -> None:
    for name in DEMO_DATASETS:
        generate(name, dataset_dir)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", choices=[[], *DEMO_DATASETS], help="default: all")
    parser.add_argument("--dataset-dir", type=Path, default=DATASET_DIR)


def run(args: argparse.Namespace) -> int:
    for name in args.names or DEMO_DATASETS:
        for split, path in generate(name, args.dataset_dir).items():
            print(f"{name}_{split}: {path}")
    return 0
