"""What `--max-pixels` saves: LLaMA-Factory's per-step image preprocessing on 1024 px JPEGs vs the same set
converted with `vlmr convert ... --max-pixels` (resized once, at conversion time).

    python benchmarks/bench_preprocess_max_pixels.py --images 64

Both sets go through the same call the training collator makes every step and every epoch:
`template.mm_plugin._get_mm_inputs(images, ...)` (decode, resize to `image_max_pixels`, the processor's
normalisation and patching) with a tiny Qwen2.5-VL's processor (the image processor is the real one; only
the model is tiny) and `image_max_pixels` = 512*512, the general VQA recipe's value.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_MAX_PIXELS = 512 * 512


def make_raw(root: Path, count: int) -> Path:
    """An image-folder dataset of `count` 1024x1024 photo-like JPEGs (smooth gradients plus noise)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:1024, 0:1024]
    for i in range(count):
        base = np.stack([(xx + 40 * i) % 256, (yy * 2 + i) % 256, (xx + yy) % 256], -1).astype(np.float32)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        folder = root / ("even" if i % 2 == 0 else "odd")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{i:04d}.jpg", quality=90)
    return root


def preprocess_rate(model: Path, dataset: Path, media_dir: Path) -> tuple[float, int]:
    """(images per second, bytes on disk) of LLaMA-Factory's mm_plugin preprocessing over a converted split."""
    from vlmrecipes.data_converters.validate import TokenCounter

    counter = TokenCounter({"model_name_or_path": str(model), "template": "qwen2_vl",
                            "image_max_pixels": IMAGE_MAX_PIXELS})
    paths = [str(media_dir / json.loads(line)["images"][0]) for line in dataset.read_text().splitlines()]
    plugin = counter.template.mm_plugin
    plugin._get_mm_inputs(paths[:2], [], [], counter.processor)  # warm-up
    start = time.perf_counter()
    for path in paths:
        plugin._get_mm_inputs([path], [], [], counter.processor)
    return len(paths) / (time.perf_counter() - start), sum(Path(p).stat().st_size for p in paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    args = parser.parse_args()
    from vlmrecipes.tiny import build_tiny

    vlmr = str(Path(sys.executable).parent / "vlmr")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny("qwen2_5_vl", root / "tiny")
        raw = make_raw(root / "raw", args.images)
        results = {}
        limited = ["--max-pixels", str(IMAGE_MAX_PIXELS)]
        for label, extra in (("full 1024 px", []), (f"--max-pixels {IMAGE_MAX_PIXELS}", limited)):
            name = "full" if not extra else "small"
            start = time.perf_counter()
            subprocess.run([vlmr, "convert", "image-folder", "--input", str(raw), "--dataset-dir", str(root / "ds"),
                            "--name", name, *extra], check=True, capture_output=True)
            convert_s = time.perf_counter() - start
            rate, size = preprocess_rate(model, root / "ds" / name / "train.jsonl", root / "ds")
            results[label] = rate
            print(f"{label:22s}: conversion {convert_s:5.1f} s; preprocessing {rate:6.1f} images/s; "
                  f"{size / args.images / 1e3:6.0f} KB per image")
        full, small = results.values()
        print(f"speed-up of per-epoch image preprocessing with --max-pixels: {small / full:.2f}x")


if __name__ == "__main__":
    main()
