"""Conversion throughput of `vlmr convert llava` on a generated LLaVA-CC3M-Pretrain-595K-shaped chat.json.

    python benchmarks/bench_convert_llava.py --records 600000

Prints records/s, the conversion time against just parsing the same file with ijson (goal: within 2x), and
peak RSS of each (goal: < 500 MB). Images are hard links to a few copies of one small JPEG (CC3M names one image per
record) and the conversion runs with `--media reference` (existence checks, no decoding): the figure is the cost of the
pipeline itself (streamed parse, record checks, JSON Lines writing), not of copying 600K files.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

PARSE_ONLY = "import ijson, sys\nn = 0\nwith open(sys.argv[1], 'rb') as f:\n" \
             "    for _ in ijson.items(f, 'item', use_float=True):\n        n += 1\nprint(n)\n"


def generate(root: Path, records: int) -> Path:
    images = root / "images"
    images.mkdir(parents=True)
    Image.new("RGB", (224, 224), (120, 80, 40)).save(root / "seed.jpg", quality=80)
    links_per_file = 60_000  # ext4 allows 65,000 links to one inode
    with open(root / "chat.json", "w") as f:
        f.write("[")
        for i in range(records):
            name = f"GCC_train_{i:09d}.jpg"
            seed = root / f"seed{i // links_per_file}.jpg"
            if i % links_per_file == 0 and i:
                seed.write_bytes((root / "seed.jpg").read_bytes())
            os.link(root / "seed.jpg" if i < links_per_file else seed, images / name)
            record = {"id": name[:-4], "image": name, "conversations": [
                {"from": "human", "value": "Provide a brief description of the given image.\n<image>"},
                {"from": "gpt", "value": f"a photograph number {i} of an olive oil bottle on a kitchen table"}]}
            f.write(("," if i else "") + json.dumps(record))
        f.write("]")
    return root / "chat.json"


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """(seconds, peak RSS MB of the child, stdout) of one child process."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    # ru_maxrss of RUSAGE_CHILDREN is the largest child so far (KB on Linux): run the smaller one first.
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=600_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        chat = generate(root / "raw", args.records)
        megabytes, seconds = chat.stat().st_size / 1e6, time.perf_counter() - start
        print(f"generated {args.records} records, {megabytes:.0f} MB in {seconds:.0f} s")
        parse_s, parse_mb, out = timed([sys.executable, "-c", PARSE_ONLY, str(chat)])
        assert int(out) == args.records
        vlmr = str(Path(sys.executable).parent / "vlmr")
        convert_s, convert_mb, out = timed([vlmr, "convert", "llava", "--input", str(chat), "--dataset-dir",
                                            str(root / "ds"), "--media", "reference"])
        assert f"{args.records} records written" in out, out
        print(f"parse only : {parse_s:6.1f} s  {args.records / parse_s:9.0f} records/s  peak RSS {parse_mb:5.0f} MB")
        print(f"convert    : {convert_s:6.1f} s  {args.records / convert_s:9.0f} records/s  "
              f"peak RSS {convert_mb:5.0f} MB")
        print(f"ratio convert/parse: {convert_s / parse_s:.2f}x (goal <= 2x); peak RSS goal < 500 MB")


if __name__ == "__main__":
    main()
