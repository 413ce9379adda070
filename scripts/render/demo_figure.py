"""The README figure: the paper's two barycenter demonstrations side by side, from two ``elpips barycenter`` runs.

    elpips barycenter example:cat --perturb noise --count 10 --crop 58,96,48,48 ... --out outputs/demo-noise
    elpips barycenter example:cat --perturb shift --count 10 --crop 58,96,48,48 ... --out outputs/demo-shift
    python -m elpips.scripts.render.demo_figure outputs/demo-noise outputs/demo-shift docs/barycenter_demos.png

Each row: original | one input | L2 mean | barycenter, enlarged by pixel repetition. Written atomically.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from elpips.io import load_image, save_image

from ..common import calibration_label
from .figures import column, labelled, row, tile


def demo_row(run: Path, scale: int) -> np.ndarray:
    """One labelled row from a run folder of ``elpips barycenter --perturb``."""
    log = json.loads((run / "log.json").read_text())
    kind = log["inputs"]["perturb"]
    net = calibration_label(log["metric"], log["calibrated"], short=True)
    steps = log["settings"]["steps"]
    tiles = [
        labelled(tile(load_image(run / "original.png"), scale), "original"),
        labelled(tile(load_image(run / "inputs" / "input_01.png"), scale), f"1 of {log['inputs']['count']}, {kind}"),
        labelled(tile(load_image(run / "l2_mean.png"), scale), "L2 mean"),
        labelled(tile(load_image(run / "barycenter.png"), scale), f"{net}, {steps} st."),
    ]
    return row(tiles)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="README figure of the barycenter demonstrations")
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (noise, shift)")
    parser.add_argument("output", type=Path, help="PNG to write")
    parser.add_argument("--scale", type=int, default=3)
    args = parser.parse_args(argv)
    save_image(args.output, column([demo_row(run, args.scale) for run in args.runs]))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
