"""Peak memory of ``elpips distance`` against image size, samples and memory budget.

    python -m elpips.benchmarks.distance_memory [--sizes 192 384] [--samples 2 8 32] [--budget 256M] \
        [--metric elpips-vgg]

Every configuration runs the real command (``python -m elpips distance A B --backbone-weights random ...``) in a
fresh process on two noise PNGs of that size, and records the process's peak resident set (``ru_maxrss`` from
``os.wait4``) and its wall time. With the memory budget the peak should be flat in the number of samples; pairs
over the budget run tile by tile. Writes ``outputs/benchmarks/distance_memory.{json,md}`` atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from elpips.io import write_json, write_text
from PIL import Image

from .environment import environment
from .memory import run_child

OUT_DIR = Path("outputs/benchmarks")


def _noise_png(folder: Path, name: str, size: tuple[int, int], seed: int) -> Path:
    path = folder / f"{name}.png"
    pixels = np.random.default_rng(seed).integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def measure(metric: str, size: tuple[int, int], samples: int, budget: str | None, folder: Path) -> dict:
    """Run one ``elpips distance`` and return its peak RSS (MiB), wall time and distance."""
    a = _noise_png(folder, "a", size, 0)
    b = _noise_png(folder, "b", size, 1)
    command = [sys.executable, "-m", "elpips", "distance", str(a), str(b), "--backbone-weights", "random",
               "--metric", metric, "--samples", str(samples), "--json", "--seed", "0"]
    if budget:
        command += ["--memory-budget", budget]
    done = run_child(command, dict(os.environ, OMP_NUM_THREADS="1"))
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    result = json.loads(done.stdout)
    return {"metric": metric, "height": size[0], "width": size[1], "samples": samples, "budget": budget,
            "peak_rss_mib": round(done.peak_rss_mib, 1), "seconds": round(done.wall_s, 2),
            "distance": result["distance"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[192, 384], help="square image sides")
    parser.add_argument("--samples", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--budget", default="256M", help="--memory-budget for every run ('' for the default)")
    parser.add_argument("--tiled", default="1024x768", help="one extra run of this size HxW at 2 samples")
    parser.add_argument("--metric", default="elpips-vgg")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        configurations = [((size, size), samples) for size in args.sizes for samples in args.samples]
        if args.tiled:
            height, width = (int(v) for v in args.tiled.split("x"))
            configurations.append(((height, width), 2))
        for size, samples in configurations:
            rows.append(measure(args.metric, size, samples, args.budget or None, Path(folder)))
            print(json.dumps(rows[-1]), flush=True)
    write_json(OUT_DIR / "distance_memory.json", {"environment": environment(torch.device("cpu")), "rows": rows})
    lines = ["| metric | size | samples | budget | peak RSS (MiB) | wall (s) |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['metric']} | {r['height']}x{r['width']} | {r['samples']} | {r['budget'] or 'default'} | "
              f"{r['peak_rss_mib']} | {r['seconds']} |" for r in rows]
    write_text(OUT_DIR / "distance_memory.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
