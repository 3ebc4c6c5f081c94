"""What painting the target-side auxiliary set costs, from the miniature world's size to SD's.

``IDLConfig.target_aux=N`` paints N auxiliary portraits with the target's texture
(:func:`styo.texture_transfer.texture_transfer`) before a run trains; the painter runs on the CPU
whatever the model's device. Its work grows with the picture: blocks are an eighth of the side,
so quilting compares up to 4,096 candidate blocks at 169 places whatever the size, each block
holding (side / 8)² pixels, and the joint bilateral filter's radius is a quarter of a block. This
times one painting at each size, ``--repeats`` times (the median is kept), and projects the time of
a run's painted set (``--portraits``, 16 by default as in the studies).

The pictures are seeded noise: the painter's work depends on the size alone, not on what the
pictures show.

    .venv/bin/python benchmarks/texture_transfer_cost.py                 # 64² to 512²
    .venv/bin/python benchmarks/texture_transfer_cost.py --sizes 64,128 --repeats 3

Writes benchmarks/results/texture-transfer-cost.{json,md} (or --out-dir).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from styo.book.results import markdown_table
from styo.texture_transfer import texture_transfer


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes takes sides in pixels separated by commas, like 64,512; "
                                         f"got {text!r}") from None
    if not sizes or min(sizes) < 16:
        raise argparse.ArgumentTypeError(f"--sizes needs sides of 16 pixels or more, got {text!r}")
    return sizes


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def time_painting(size: int, repeats: int, seed: int = 0) -> list[float]:
    """Seconds of ``repeats`` paintings of one size-by-size noise picture with another's texture."""
    rng = np.random.default_rng(seed)
    style, content = (Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(2))
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        texture_transfer(style, content, seed=seed)
        seconds.append(time.perf_counter() - start)
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=_sizes, default=[64, 128, 256, 512], help="picture sides, e.g. 64,512")
    parser.add_argument("--repeats", type=_positive, default=1, help="paintings timed at each size (median kept)")
    parser.add_argument("--portraits", type=_positive, default=16, help="painted portraits a run makes")
    parser.add_argument("--out-dir", default="benchmarks/results")
    args = parser.parse_args(argv)

    rows = []
    for size in args.sizes:
        seconds = statistics.median(time_painting(size, args.repeats))
        rows.append({"size": size, "seconds": seconds, "run_minutes": seconds * args.portraits / 60})
        print(f"{size}²: {seconds:.2f} s per portrait", flush=True)
    for row in rows:
        row["vs_first"] = row["seconds"] / rows[0]["seconds"]
    command = (f"benchmarks/texture_transfer_cost.py --sizes {','.join(map(str, args.sizes))} "
               f"--repeats {args.repeats} --portraits {args.portraits}")
    report = {"kind": "texture-transfer-cost", "command": command, "machine": platform.machine(),
              "cores": os.cpu_count(), "rows": rows}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "texture-transfer-cost.json").write_text(json.dumps(report, indent=1) + "\n")
    first = args.sizes[0]
    md = ["# What painting the target-side auxiliary set costs", "", f"`{command}`, {platform.machine()}, "
          f"{os.cpu_count()} cores", "",
          f"One painting (`styo.texture_transfer.texture_transfer`, NumPy on the CPU) per size, the median of "
          f"{args.repeats}; `× {first}²` is the time against the first size's, and `run (min)` projects "
          f"the {args.portraits} portraits of `target_aux={args.portraits}`, painted once before the run trains.", "",
          markdown_table(rows, ["size", "seconds", "vs_first", "run_minutes"],
                         ["side (px)", "seconds per portrait", f"× {first}²", "run (min)"]), ""]
    (out / "texture-transfer-cost.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
