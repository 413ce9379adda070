"""Crop mode against pad mode (docs/algorithm.md#ensemble): speed and distances.

* **speed**: ``metric(x, y).sum().backward()`` (one image, ``n = 1``, one scale level so both sides see the same
  image size) under the full ensemble in pad mode and in crop mode, timed in alternation in one run;
  ``crop_speedup`` = median over rounds of pad time / crop time.
* **distances**: for a few image pairs (the shipped examples, centre-cropped and resized), the many-sample mean
  distance under pad mode and under crop mode (same seeds, default scale levels); the mean relative difference
  ``(d_crop - d_pad) / d_pad`` over the pairs, with each pair's 95% half-widths.

``python -m elpips.benchmarks.crop`` runs this section alone; ``elpips bench`` includes it.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from elpips import EnsembleConfig, Metric
from elpips.estimate import Z_95
from elpips.io import write_json, write_text

from .environment import load_average
from .measurements import example_image
from .timing import paired_ratio, paired_timings, summarize

EXAMPLES = ("cat", "dog", "house", "teddy")
CROP = EnsembleConfig(crop=True)


def _metric(device: torch.device | str, crop: bool, scale_levels: int | None) -> Metric:
    return Metric("elpips-vgg", backbone_weights="random", device=device, seed=0, scale_levels=scale_levels,
                  ensemble=CROP if crop else None)


def measure_crop_speed(device: torch.device | str, size: int, repeats: int, warmup: int,
                       tick: Callable[[], None] | None = None) -> dict:
    """Forward + backward of one ``size`` px image pair, pad vs crop mode (one scale level), alternated."""
    pad, crop = _metric(device, False, 1), _metric(device, True, 1)
    x0, y = example_image("cat", size).to(pad.device), example_image("dog", size).to(pad.device)

    def side(metric: Metric) -> Callable[[], None]:
        def run() -> None:
            x = x0.clone().requires_grad_(True)
            metric(x, y).sum().backward()
        return run

    times = paired_timings({"pad": side(pad), "crop": side(crop)}, repeats, warmup, pad.device, tick)
    return {"size": size, "repeats": repeats, "network_input_px": {"pad": size + 7, "crop": size - 7},
            "timings": {name: summarize(values) for name, values in times.items()},
            "crop_speedup": paired_ratio(times["pad"], times["crop"])}


@torch.no_grad()
def measure_crop_distances(device: torch.device | str, size: int, pairs: int, samples: int) -> dict:
    """Many-sample distances of ``pairs`` example pairs under pad and crop mode (default scale levels)."""
    pad, crop = _metric(device, False, None), _metric(device, True, None)
    images = {name: example_image(name, size).to(pad.device) for name in EXAMPLES}
    rows = []
    for first, second in list(itertools.combinations(EXAMPLES, 2))[:pairs]:
        row = {"pair": f"{first}-{second}"}
        for label, metric in (("pad", pad), ("crop", crop)):
            draws = metric.sample_distances(images[first], images[second], samples,
                                            torch.Generator().manual_seed(1)).double()[:, 0]
            row[label] = float(draws.mean())
            row[f"{label}_half_width"] = float(Z_95 * draws.std() / samples ** 0.5)
        row["relative_difference"] = (row["crop"] - row["pad"]) / row["pad"]
        rows.append(row)
    differences = [row["relative_difference"] for row in rows]
    return {"size": size, "samples": samples, "pairs": rows,
            "mean_relative_difference": statistics.fmean(differences),
            "mean_abs_relative_difference": statistics.fmean(abs(d) for d in differences)}


def measure_crop_mode(device: torch.device | str, size: int, repeats: int, warmup: int, pairs: int = 3,
                      samples: int = 256, tick: Callable[[], None] | None = None) -> dict:
    """Both measurements (see the module docstring), JSON-ready."""
    return {"speed": measure_crop_speed(device, size, repeats, warmup, tick),
            "distances": measure_crop_distances(device, size, pairs, samples)}


def render_crop(record: dict) -> list[str]:
    """Markdown lines for the crop section."""
    speed, distances = record["speed"], record["distances"]
    lines = [f"## Crop mode vs pad mode ({speed['size']} px)", "",
             f"Forward + backward, one scale level: pad {speed['timings']['pad']['median_s'] * 1e3:.1f} ms, crop "
             f"{speed['timings']['crop']['median_s'] * 1e3:.1f} ms (network input {speed['network_input_px']['pad']}"
             f" vs {speed['network_input_px']['crop']} px); **crop speed-up {speed['crop_speedup']:.2f}x** (paired "
             f"median of {speed['repeats']} rounds).", "",
             f"Distances ({distances['samples']} samples per pair and mode, default scale levels, "
             f"{distances['size']} px):", "",
             "| pair | pad | crop | relative difference |", "|---|---|---|---|"]
    for row in distances["pairs"]:
        lines.append(f"| {row['pair']} | {row['pad']:.4f} ± {row['pad_half_width']:.4f} | {row['crop']:.4f} ± "
                     f"{row['crop_half_width']:.4f} | {row['relative_difference'] * 100:+.1f}% |")
    lines += ["", f"Mean relative difference {distances['mean_relative_difference'] * 100:+.1f}% (mean absolute "
                  f"{distances['mean_abs_relative_difference'] * 100:.1f}%).", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m elpips.benchmarks.crop", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds (default 15)")
    parser.add_argument("--pairs", type=int, default=3, help="image pairs for the distances (default 3, max 6)")
    parser.add_argument("--samples", type=int, default=256, help="samples per pair and mode (default 256)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", default="outputs/benchmarks", help="output folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    record = measure_crop_mode(args.device, args.size, args.repeats, 1, args.pairs, args.samples)
    record["load_average"] = load_average()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    write_json(Path(args.out) / f"crop-{stamp}.json", record)
    write_text(Path(args.out) / f"crop-{stamp}.md", "\n".join(render_crop(record)))
    print("\n".join(render_crop(record)), file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
