"""Interpolation windows: one keyframe pair per window vs one window through all keyframes.

Do multi-keyframe windows make motion smoother across keyframes, and what do they cost? Writes
``outputs/benchmarks/interpolate_windows.{json,md}`` and, for the paired timing (``--sections timing``: the whole
clip as pairs and as one window, interleaved), ``interpolate_windows_timing.json``.

    python -m elpips.benchmarks.interpolate_windows [--size 64] [--frames 5] [--factor 4] [--steps 30]

The clip is a camera pan over the shipped cat (``elpips examples --pan cat``). Each configuration is stitched into
one path of ``(T-1) K + 1`` frames and evaluated under the very same seeded ensemble samples (paired, ``--samples``):

* energy ``sum d^2`` of the whole path, and the wall time of the solves;
* speed jumps ``|log(d_i / d_{i-1})|`` at the interior keyframes (the seams between pairs) and at the other frames;
* pixel second differences ``rms(x_{i+1} - 2 x_i + x_{i-1})`` at the seams and elsewhere;
* how far two configurations' frames lie apart, next to how far two seeds of the same configuration do.

E-LPIPS-VGG on the seeded random backbone, one torch thread.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch

from elpips import Metric
from elpips.clips import pan_frames
from elpips.geodesics import SolveSettings, crossfade, evaluate_path, plan_windows, solve_window
from elpips.io import load_image, write_json, write_text


def stitched(metric: Metric, keys: torch.Tensor, factor: int, per_window: int, steps: int, seed: int) -> tuple:
    """The clip's path solved in windows of ``per_window`` keyframes, and the seconds it took."""
    settings = SolveSettings(steps=steps, eval_samples=1)
    parts, started = [], time.perf_counter()
    windows = plan_windows(keys.shape[0], per_window)
    for window in windows:
        result = solve_window(keys[window.first:window.last + 1], metric, window=window, factor=factor, seed=seed,
                              settings=settings)
        parts.append(result.owned_frames(factor, keys.shape[0]))
    return torch.cat(parts), time.perf_counter() - started


def smoothness(path: torch.Tensor, distances: torch.Tensor, factor: int) -> dict:
    """Speed jumps and pixel second differences at the seams (interior keyframes) and at the other frames."""
    seams = set(range(factor, path.shape[0] - 1, factor))
    jumps = {"seams": [], "inside": []}
    bends = {"seams": [], "inside": []}
    for index in range(1, path.shape[0] - 1):
        where = "seams" if index in seams else "inside"
        jumps[where].append(abs(math.log(float(distances[index]) / float(distances[index - 1]))))
        bend = path[index + 1] - 2 * path[index] + path[index - 1]
        bends[where].append(float(bend.square().mean().sqrt()))
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    return {"speed_jump_seams": mean(jumps["seams"]), "speed_jump_inside": mean(jumps["inside"]),
            "second_difference_seams": mean(bends["seams"]), "second_difference_inside": mean(bends["inside"])}


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).square().mean().sqrt())


def paired_timing(metric: Metric, keys: torch.Tensor, factor: int, steps: int, repeats: int) -> dict:
    """Wall time of the whole clip as pairs and as one window, interleaved ``repeats`` times (medians)."""
    times: dict[str, list[float]] = {"pairs": [], "one_window": []}
    stitched(metric, keys, factor, 2, 1, 0)  # warm-up
    for repeat in range(repeats):
        for name, per_window in (("pairs", 2), ("one_window", keys.shape[0])):
            times[name].append(stitched(metric, keys, factor, per_window, steps, repeat)[1])
    medians = {name: sorted(values)[len(values) // 2] for name, values in times.items()}
    return {"steps": steps, "repeats": repeats, "seconds": times, "median_s": medians,
            "pairs_over_one_window": medians["pairs"] / medians["one_window"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--samples", type=int, default=16, help="shared ensemble samples of the evaluation")
    parser.add_argument("--timing-steps", type=int, default=6, help="steps per window of the paired timing (6)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of the paired timing (3)")
    parser.add_argument("--sections", default="quality,timing")
    parser.add_argument("--out", default="outputs/benchmarks/interpolate_windows")
    args = parser.parse_args()
    torch.set_num_threads(1)
    metric = Metric("elpips-vgg", backbone_weights="random", device="cpu", seed=0)
    keys = pan_frames(load_image("example:cat"), args.frames, args.size)
    if "timing" in args.sections:
        timing = paired_timing(metric, keys, args.factor, args.timing_steps, args.repeats)
        write_json(f"{args.out}_timing.json", {**timing, "load_average_1min": os.getloadavg()[0],
                                               "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S")})
        print(json.dumps(timing, indent=2))
    if "quality" not in args.sections:
        return
    paths = {"cross-fade": (crossfade(keys, args.factor), 0.0)}
    for name, per_window, seed in (("pairs (W=2)", 2, 1), ("pairs (W=2), other seed", 2, 2),
                                   (f"one window (W={args.frames})", args.frames, 1)):
        paths[name] = stitched(metric, keys, args.factor, per_window, args.steps, seed)
    rows = {}
    for name, (path, seconds) in paths.items():
        evaluation = evaluate_path(metric, path, args.samples, torch.Generator().manual_seed(12345))
        rows[name] = {"energy": evaluation.energy, "solve_s": round(seconds, 2),
                      **smoothness(path, evaluation.distances, args.factor)}
    pair, other, window = (paths[name][0] for name in list(paths)[1:])
    fade = paths["cross-fade"][0]
    spread = {"pairs_vs_one_window": rms(pair, window), "pairs_seed_1_vs_seed_2": rms(pair, other),
              "pairs_vs_crossfade": rms(pair, fade)}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    report = {"what": __doc__.splitlines()[0], **vars(args), "metric": "elpips-vgg", "backbone": "random (seeded)",
              "threads": 1, "load_average_1min": load, "cpus": os.cpu_count(), "configurations": rows,
              "rms_between_paths": spread, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json(f"{args.out}.json", report)
    lines = [f"# {report['what']}", "",
             f"Pan over example:cat, {args.frames} frames at {args.size} px, x{args.factor}, {args.steps} steps per "
             f"window; E-LPIPS-VGG, random backbone; 1 thread, load average {load:.1f} on {os.cpu_count()} CPUs "
             "(shared machine: times are indicative).", "",
             "| path | energy | speed jump at seams | inside | 2nd difference at seams | inside | solve s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['energy']:.5g} | {row['speed_jump_seams']:.3f} | "
                     f"{row['speed_jump_inside']:.3f} | {row['second_difference_seams']:.4f} | "
                     f"{row['second_difference_inside']:.4f} | {row['solve_s']:.1f} |")
    lines += ["", "RMS pixel difference between paths: " + ", ".join(f"{k} {v:.4f}" for k, v in spread.items())]
    write_text(f"{args.out}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
