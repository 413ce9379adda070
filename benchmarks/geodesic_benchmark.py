"""Geodesic solver measurements: cost of the shared-feature step vs per-pair evaluation, and what coarse-to-fine
buys. Writes ``outputs/benchmarks/geodesic.json`` and ``geodesic.md``.

    python -m elpips.benchmarks.geodesic_benchmark A.png B.png [--downscale 2] [--crop 64] [--frames 10] [--steps 60]

Timings are wall-clock medians on whatever device the metric picks (``--device``); the backbone is random unless
``--backbone-weights`` says otherwise (step cost does not depend on the weights; energies do).
"""

from __future__ import annotations

import argparse
import platform
import statistics
from pathlib import Path

import torch
from elpips import Metric
from elpips.geodesics import evaluate_path, free_mask, linear_path, path_step, solve
from elpips.geodesics.path import downscale
from elpips.io import load_images, write_json, write_text

from .measurements import centre_crop
from .timing import timed_call


def prepare(images: list[str], factor: int, crop: int | None) -> torch.Tensor:
    """Keyframes ``[2, 3, h, w]``: box-downscaled by ``factor``, then centre-cropped to ``crop`` px."""
    keys = downscale(load_images(images), factor)
    return (centre_crop(keys, crop) if crop else keys).contiguous()


def per_pair_step(metric: Metric, path: torch.Tensor, free: torch.Tensor, variable: torch.Tensor, sample) -> None:
    """The naive step: every pair's two frames go through the network on their own, then backward per pair."""
    frames, rows = [], iter(variable.split(1))
    for k in range(path.shape[0]):
        frames.append(next(rows) if free[k] else path[k:k + 1])
    for a, b in zip(frames[:-1], frames[1:], strict=False):
        metric.distance_between(metric.features(a, sample), metric.features(b, sample)).square().sum().backward()


def time_steps(metric: Metric, keys: torch.Tensor, frames: int, repeats: int) -> dict:
    """Median seconds of one step: shared features (one chunk, and chunks of 2) vs per pair."""
    intervals = (frames - 1,)
    path = linear_path(keys, intervals).to(metric.device)
    free = free_mask(intervals)
    generator = torch.Generator().manual_seed(0)
    variants = {
        "shared_one_chunk": lambda v, s: path_step(metric, path, free, v, s, chunk_size=frames),
        "shared_chunks_of_2": lambda v, s: path_step(metric, path, free, v, s, chunk_size=2),
        "per_pair": lambda v, s: per_pair_step(metric, path, free, v, s),
    }
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(repeats + 1):  # round-robin, so load changes hit every variant alike; run 0 warms up
        for name, step in variants.items():
            variable = path[free.to(path.device)].clone().requires_grad_(True)
            sample = metric.sample(1, *keys.shape[-2:], generator)
            timed = timed_call(lambda step=step, variable=variable, sample=sample: step(variable, sample),
                               metric.device)
            if repeat:
                wall[name].append(timed.wall_s)
                cpu[name].append(timed.cpu_s)
    result: dict = {name: statistics.median(values) for name, values in wall.items()}
    result["cpu_seconds"] = {name: statistics.median(values) for name, values in cpu.items()}
    result["cpu_per_pair_over_shared"] = result["cpu_seconds"]["per_pair"] / result["cpu_seconds"]["shared_one_chunk"]
    result["per_pair_over_shared"] = result["per_pair"] / result["shared_one_chunk"]
    result["passes_shared"] = {"forward": frames, "backward": frames - 2}
    result["passes_per_pair"] = {"forward": 2 * (frames - 1), "backward": 2 * (frames - 1) - 2}
    return result


def network_passes(levels) -> float:
    """Forward plus backward passes of a solve, in full-resolution frame equivalents (``K+1`` forward and
    ``K-1`` backward passes per step; a half-resolution stage counts a quarter)."""
    return sum(level.steps * (2 * level.frames - 2) / level.scale**2 for level in levels)


def coarse_to_fine_gain(metric: Metric, keys: torch.Tensor, frames: int, steps: int, samples: int) -> dict:
    """Many-sample energy (the same seeded samples for every path) after ``steps`` steps with and without
    coarse-to-fine, with each run's network passes, CPU and wall time (the solve and its energy estimate); plus a
    run without coarse-to-fine given only as many steps as coarse-to-fine's passes pay for (equal compute)."""
    keys = keys.to(metric.device)

    def energy(path: torch.Tensor) -> float:
        return evaluate_path(metric, path.to(metric.device), samples, torch.Generator().manual_seed(123)).energy

    def run(steps: int, **options) -> dict:
        def solve_and_evaluate() -> tuple:
            result = solve(keys, metric, frames=frames, steps=steps,
                           generator=torch.Generator().manual_seed(1), eval_samples=1, **options)
            return result, energy(result.frames)

        timed = timed_call(solve_and_evaluate, metric.device)
        result, value = timed.value
        return {"energy": value, "seconds": timed.wall_s, "cpu_seconds": timed.cpu_s,
                "passes": network_passes(result.levels),
                "stages": [[level.frames, level.scale, level.steps] for level in result.levels]}

    runs = {"linear_blend": {"energy": energy(linear_path(keys, (frames - 1,))), "seconds": 0.0,
                             "cpu_seconds": 0.0, "passes": 0.0}}
    runs["no_coarse_to_fine"] = run(steps, coarse_to_fine=False)
    runs["coarse_to_fine_time"] = run(steps, coarse_to_fine=True)
    if min(keys.shape[-2:]) // 2 >= metric.min_size:
        runs["coarse_to_fine_time_and_space"] = run(steps, coarse_to_fine=True, spatial=True)
    reference = runs["no_coarse_to_fine"]
    per_step = reference["passes"] / steps
    equal = max(1, round(runs["coarse_to_fine_time"]["passes"] / per_step))
    runs[f"no_coarse_to_fine_{equal}_steps"] = run(equal, coarse_to_fine=False)
    for entry in runs.values():
        for key in ("energy", "passes", "cpu_seconds", "seconds"):
            entry[f"{key}_ratio"] = entry[key] / reference[key] if reference[key] else None
    return runs


def markdown(report: dict) -> str:
    steps, gain = report["step_cost"], report["coarse_to_fine"]
    lines = [f"# Geodesic solver benchmark ({report['metric']}, {report['size'][0]}x{report['size'][1]} px, "
             f"{report['frames']} frames, {report['device']})", "",
             f"Backbone: {report['backbone']}. Threads: {report['threads']}.", "",
             "| step | median wall s | median CPU s | forward / backward passes |", "|---|---|---|---|",
             f"| shared features, one chunk | {steps['shared_one_chunk']:.3f} | "
             f"{steps['cpu_seconds']['shared_one_chunk']:.3f} | "
             f"{steps['passes_shared']['forward']} / {steps['passes_shared']['backward']} |",
             f"| shared features, chunks of 2 | {steps['shared_chunks_of_2']:.3f} | "
             f"{steps['cpu_seconds']['shared_chunks_of_2']:.3f} | + 1 forward per chunk boundary |",
             f"| per pair | {steps['per_pair']:.3f} | {steps['cpu_seconds']['per_pair']:.3f} | "
             f"{steps['passes_per_pair']['forward']} / {steps['passes_per_pair']['backward']} |", "",
             f"Per-pair evaluation costs **{steps['per_pair_over_shared']:.2f}x** (wall) / "
             f"**{steps['cpu_per_pair_over_shared']:.2f}x** (CPU time) the shared-feature step.", "",
             f"Coarse-to-fine, {report['steps']} steps, energy from {report['samples']} seeded samples "
             "(the same for every path):", "",
             "| run | energy (ratio) | network passes (ratio) | CPU s (ratio) | wall s "
             "| stages (frames, scale, steps) |",
             "|---|---|---|---|---|---|"]
    for name, run in gain.items():
        ratios = [run[f"{key}_ratio"] for key in ("energy", "passes", "cpu_seconds")]
        lines.append(f"| {name} | {run['energy']:.4g} ({ratios[0]:.3f}) | {run['passes']:.0f} ({ratios[1]:.2f}) | "
                     f"{run['cpu_seconds']:.1f} ({ratios[2]:.2f}) | {run['seconds']:.1f} | {run.get('stages', '')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs=2)
    parser.add_argument("--downscale", type=int, default=1)
    parser.add_argument("--crop", type=int, default=None)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--metric", default="elpips-vgg")
    parser.add_argument("--backbone-weights", default="random")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default="outputs/benchmarks")
    args = parser.parse_args()
    metric = Metric(args.metric, backbone_weights=args.backbone_weights, device=args.device, seed=0)
    keys = prepare(args.images, args.downscale, args.crop)
    report = {"metric": metric.name, "backbone": metric.weights_info.description, "device": str(metric.device),
              "threads": torch.get_num_threads(), "platform": platform.platform(), "images": args.images,
              "size": list(keys.shape[-2:]), "frames": args.frames, "steps": args.steps, "samples": args.samples}
    report["step_cost"] = time_steps(metric, keys.to(metric.device), args.frames, args.repeats)
    print(f"step cost: {report['step_cost']}", flush=True)
    report["coarse_to_fine"] = coarse_to_fine_gain(metric, keys, args.frames, args.steps, args.samples)
    out = Path(args.out)
    write_json(out / "geodesic.json", report)
    write_text(out / "geodesic.md", markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
