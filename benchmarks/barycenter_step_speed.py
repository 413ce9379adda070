"""Benchmark: one barycenter step with shared features vs the per-pair step, at N references.

The per-pair step is what a loop over references does: for every reference, x's and the reference's features
under the (same) ensemble sample, the distance, and a backward pass: 2N forwards, N backwards. The shared step
(:func:`elpips.barycenters.shared_step`) computes x's features once: N + 1 forwards, 1 backward. Both get the
same sample and must produce the same gradient (checked and reported).

    python -m elpips.benchmarks.barycenter_step_speed --count 10 --size 64 --backbone-weights random

Writes ``outputs/benchmarks/barycenter_step_speed.json`` and ``.md`` (atomically). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from pathlib import Path
from typing import Any

import elpips
import torch
from elpips.barycenters import draw_sample, shared_step
from elpips.io import write_json, write_text

from .timing import paired_timings


def per_pair_step(metric: elpips.Metric, x: torch.Tensor, references: torch.Tensor, coefficients: torch.Tensor,
                  power: float, sample: Any) -> None:
    """The baseline: accumulate ``x.grad`` one reference at a time (2 forwards and 1 backward each)."""
    for index in range(references.shape[0]):
        fx = metric.features(x, sample)
        fr = metric.features(references[index:index + 1], sample)
        distance = metric.distance_between(fx, fr).sum()
        (coefficients[index] * distance.pow(power)).backward()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10, help="references N (default 10)")
    parser.add_argument("--size", type=int, default=64, help="square image side in px (default 64)")
    parser.add_argument("--metric", default="elpips-vgg")
    parser.add_argument("--backbone-weights", default="random")
    parser.add_argument("--device", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="outputs/benchmarks")
    args = parser.parse_args(argv)

    metric = elpips.Metric(args.metric, backbone_weights=args.backbone_weights, device=args.device, seed=0)
    device = metric.device
    generator = torch.Generator().manual_seed(0)
    references = torch.rand(args.count, 3, args.size, args.size, generator=generator).to(device)
    x0 = torch.rand(1, 3, args.size, args.size, generator=generator).to(device)
    coefficients = torch.full((args.count,), 1.0 / args.count, device=device)
    sample = draw_sample(metric, 1, args.size, args.size, generator)
    x_shared = x0.clone().requires_grad_(True)
    x_pairs = x0.clone().requires_grad_(True)

    def shared() -> None:
        x_shared.grad = None
        shared_step(metric, x_shared, references, coefficients, 2.0, sample)

    def pairs() -> None:
        x_pairs.grad = None
        per_pair_step(metric, x_pairs, references, coefficients, 2.0, sample)

    times = paired_timings({"shared": shared, "per_pair": pairs}, args.repeats, 1, device)
    shared_times, pair_times = times["shared"], times["per_pair"]
    gradient_error = float((x_shared.grad - x_pairs.grad).abs().max() / x_pairs.grad.abs().max())
    shared_s, pair_s = statistics.median(shared_times), statistics.median(pair_times)
    report = {
        "benchmark": "barycenter step: shared features vs per-pair",
        "metric": metric.name, "backbone_weights": metric.weights_info.source, "calibrated": metric.calibrated,
        "references": args.count, "image_size": [args.size, args.size], "device": str(device),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.machine(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "repeats": args.repeats, "shared_step_seconds": shared_times, "per_pair_step_seconds": pair_times,
        "shared_step_median_s": shared_s, "per_pair_step_median_s": pair_s, "speedup": pair_s / shared_s,
        "max_relative_gradient_difference": gradient_error,
    }
    out = Path(args.out)
    write_json(out / "barycenter_step_speed.json", report)
    write_text(out / "barycenter_step_speed.md", (
        f"# Barycenter step at N = {args.count}\n\n"
        f"{metric.name} ({metric.weights_info.source} backbone), {args.size}x{args.size} px, {device}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}.\n\n"
        f"| step | forwards | backwards | median s |\n|---|---|---|---|\n"
        f"| per pair | {2 * args.count} | {args.count} | {pair_s:.3f} |\n"
        f"| shared features | {args.count + 1} | 1 | {shared_s:.3f} |\n\n"
        f"Speed-up: **{pair_s / shared_s:.2f}x**; gradients agree to {gradient_error:.1e} (relative, max).\n"
    ))
    print(f"N={args.count} {args.size}px {device}: per-pair {pair_s:.3f} s, shared {shared_s:.3f} s, "
          f"speed-up {pair_s / shared_s:.2f}x (gradient difference {gradient_error:.1e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
