"""What the autoload .pth costs at interpreter start: `python -X importtime -c pass`, hook on vs off.

    python benchmarks/bench_autoload.py [--runs 30]

Reports the median import time of our modules (from -X importtime) and the median wall time of
`python -c pass` with the hook and with VLMR_NO_AUTOLOAD=1, in the same run, as a difference and a ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def one_run(disabled: bool) -> tuple[float, float]:
    env = dict(os.environ)
    if disabled:
        env["VLMR_NO_AUTOLOAD"] = "1"
    else:
        env.pop("VLMR_NO_AUTOLOAD", None)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], env=env, capture_output=True,
                          text=True, check=True)
    wall = time.perf_counter() - start
    ours = 0.0
    for line in proc.stderr.splitlines():  # "import time:  self | cumulative | name", microseconds
        parts = line.split("|")
        if len(parts) == 3 and parts[2].strip() in ("vlmrecipes", "vlmrecipes._autoload"):
            ours += float(parts[1].split(":")[-1])
    return wall * 1e3, ours / 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    on, off, imports = [], [], []
    for _ in range(args.runs):  # interleaved so machine noise hits both sides alike
        wall, ours = one_run(disabled=False)
        on.append(wall)
        imports.append(ours)
        off.append(one_run(disabled=True)[0])
    med_on, med_off, med_imp = statistics.median(on), statistics.median(off), statistics.median(imports)
    print(f"python -c pass, hook on : {med_on:.1f} ms (median of {args.runs})")
    print(f"python -c pass, hook off: {med_off:.1f} ms")
    print(f"hook cost: {med_imp:.2f} ms of imports (-X importtime), wall difference {med_on - med_off:+.1f} ms, "
          f"ratio {med_on / med_off:.3f}; budget 5 ms")


if __name__ == "__main__":
    main()
