"""Does stratifying the ensemble across consecutive solver steps help? Independent samples per step against
:class:`elpips.solver.ensemble_stream.StratifiedStream`, for the geodesic and the barycenter solver (one sample per
step).

    python -m elpips.benchmarks.ensemble_stream_benchmark [--size 32] [--frames 8] [--images 6] [--seeds 0,1,2]

Measures, for each solver:

* **gradient variance** at a fixed point (the iterate after ``--warm-steps`` independent steps): the mean squared
  deviation of the average of ``K`` consecutive one-sample gradients from a reference gradient (the mean of
  ``--reference`` independent gradients), relative to the reference's squared norm, for ``K`` = 8 and 24, over
  ``--repeats`` runs of 24 steps (the K = 8 blocks are steps 0-7, 8-15, 16-23 of each run). The reference's own
  noise (``floor``, estimated from the single-step spread) is reported beside it. A reference-free spread (the
  variance between the runs' K-step means) is given as well.
* **objective reached** at equal steps (equal compute: the stream costs nothing measurable): the seeded
  many-sample objective (the same draws for both modes) after ``--geodesic-steps`` / ``--barycenter-steps``, for
  each seed.

Writes ``outputs/benchmarks/ensemble_stream.{json,md}``. Random backbone unless ``--backbone-weights`` says
otherwise; timings are not the point and are not reported.
"""

from __future__ import annotations

import argparse
import platform
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
from elpips import Metric
from elpips.barycenters import solve as solve_barycenter
from elpips.barycenters.evaluate import evaluate_objective
from elpips.barycenters.perturb import noisy_copies
from elpips.barycenters.step import shared_step
from elpips.geodesics import evaluate_path, free_mask, path_step
from elpips.geodesics import solve as solve_geodesic
from elpips.geodesics.path import downscale
from elpips.io import load_image, load_images, write_json, write_text
from elpips.solver.ensemble_stream import DEFAULT_WINDOW, StratifiedStream

from .measurements import centre_crop

Gradient = Callable[[object], torch.Tensor]
RUN_LENGTH = 24


def geodesic_problem(metric: Metric, size: int, frames: int, warm_steps: int) -> tuple[Gradient, tuple, dict]:
    """cat -> dog at ``size`` px: the gradient of the path energy at the path after ``warm_steps`` steps."""
    keys = centre_crop(downscale(load_images(["example:cat", "example:dog"]), 2), size).contiguous()
    warm = solve_geodesic(keys, metric, frames=frames, steps=warm_steps,
                          generator=torch.Generator().manual_seed(1000), eval_samples=1, coarse_to_fine=False).frames
    free = free_mask((frames - 1,))

    def gradient(sample) -> torch.Tensor:
        variable = warm[free].clone().requires_grad_(True)
        path_step(metric, warm, free, variable, sample, 1, chunk_size=frames)
        return variable.grad.flatten().double()

    return gradient, (size, size), {"keys": keys}


def barycenter_problem(metric: Metric, size: int, count: int, warm_steps: int) -> tuple[Gradient, tuple, dict]:
    """``count`` noisy copies of a cat crop: the gradient of the objective at the iterate after ``warm_steps``."""
    original = centre_crop(downscale(load_image("example:cat"), 2), size).contiguous()
    images = noisy_copies(original, count, 0.07, generator=torch.Generator().manual_seed(7))
    warm = solve_barycenter(images, metric, steps=warm_steps, generator=1000, eval_samples=1).image
    coefficients = torch.full((count,), 1.0 / count)

    def gradient(sample) -> torch.Tensor:
        x = warm.clone().requires_grad_(True)
        shared_step(metric, x, images, coefficients, 2.0, sample, 1)
        return x.grad.flatten().double()

    return gradient, (size, size), {"images": images}


def gradient_variance(metric: Metric, gradient: Gradient, size: tuple, reference_count: int, repeats: int) -> dict:
    generator = torch.Generator().manual_seed(54321)
    singles = torch.stack([gradient(metric.sample(1, *size, generator)) for _ in range(reference_count)])
    reference = singles.mean(0)
    norm = float(reference.square().sum())
    single_variance = float((singles - reference).square().sum(1).mean()) * reference_count / (reference_count - 1)
    runs: dict[str, list[torch.Tensor]] = {"independent": [], "stratified": []}
    for repeat in range(repeats):
        runs["independent"].append(torch.stack([gradient(metric.sample(1, *size, generator))
                                                for _ in range(RUN_LENGTH)]))
        stream = StratifiedStream(9000 + repeat)
        runs["stratified"].append(torch.stack([gradient(stream.sample(metric, step, *size))
                                               for step in range(RUN_LENGTH)]))
    result = {"reference_samples": reference_count, "repeats": repeats, "reference_norm_sq": norm,
              "single_step_relative_variance": single_variance / norm}
    bootstrap = torch.Generator().manual_seed(777)
    for k in (8, 24):
        entry = {"floor": single_variance / reference_count / norm}
        per_run = {}
        for mode, gradients in runs.items():
            means = [run[start:start + k].mean(0) for run in gradients for start in range(0, RUN_LENGTH, k)]
            stacked = torch.stack(means)
            errors = (stacked - reference).square().sum(1) / norm  # [repeats * blocks], run-major
            per_run[mode] = errors.reshape(repeats, -1).mean(1)
            entry[f"{mode}_block_errors"] = [round(float(e), 6) for e in errors]
            entry[f"{mode}_median_error"] = float(errors.median())
            entry[f"{mode}_mse"] = float((stacked - reference).square().sum(1).mean()) / norm
            entry[f"{mode}_spread"] = float((stacked - stacked.mean(0)).square().sum(1).sum()) / (len(means) - 1) / norm
        entry["independent_expected"] = single_variance / k / norm
        entry["mse_ratio_stratified_over_independent"] = entry["stratified_mse"] / entry["independent_mse"]
        entry["variance_ratio_after_floor"] = ((entry["stratified_mse"] - entry["floor"])
                                               / max(entry["independent_mse"] - entry["floor"], 1e-30))
        entry["spread_ratio"] = entry["stratified_spread"] / entry["independent_spread"]
        entry["median_error_ratio"] = entry["stratified_median_error"] / entry["independent_median_error"]
        draws = torch.randint(0, repeats, (2000, repeats), generator=bootstrap)
        ratios = (per_run["stratified"][draws].mean(1) / per_run["independent"][draws].mean(1)).sort().values
        entry["mse_ratio_bootstrap_ci95"] = [float(ratios[50]), float(ratios[1949])]
        result[f"K={k}"] = entry
    return result


def objective_reached(metric: Metric, problem: str, data: dict, seeds: list[int], steps: int, frames: int,
                      eval_samples: int) -> dict:
    rows = []
    for seed in seeds:
        row = {"seed": seed}
        for mode in ("independent", "stratified"):
            if problem == "geodesic":
                result = solve_geodesic(data["keys"], metric, frames=frames, steps=steps,
                                        generator=torch.Generator().manual_seed(seed), eval_samples=1,
                                        ensemble_stream=mode)
                value = evaluate_path(metric, result.frames, eval_samples, torch.Generator().manual_seed(123)).energy
            else:
                images = data["images"]
                result = solve_barycenter(images, metric, steps=steps, generator=seed, eval_samples=1,
                                          ensemble_stream=mode)
                value = evaluate_objective(metric, result.image, images, torch.full((images.shape[0],),
                                                                                     1.0 / images.shape[0]),
                                           2.0, samples=eval_samples, seed=123).objective
            row[mode] = value
        row["ratio"] = row["stratified"] / row["independent"]
        rows.append(row)
        print(f"{problem} seed {seed}: {row}", flush=True)
    ratios = [row["ratio"] for row in rows]
    return {"steps": steps, "eval_samples": eval_samples, "rows": rows, "mean_ratio": statistics.fmean(ratios),
            "ratio_std": statistics.stdev(ratios) if len(ratios) > 1 else 0.0}


def markdown(report: dict) -> str:
    lines = [f"# Cross-step stratification of the ensemble ({report['metric']}, {report['backbone']})", "",
             f"Window {report['window']} steps; {report['size']} px; geodesic {report['frames']} frames, barycenter "
             f"{report['images']} images; one ensemble sample per step. Scale levels at this size: "
             f"{report['scale_levels']}.", "",
             "## Gradient variance (relative to the reference gradient's squared norm)", "",
             "| solver | K | independent MSE | stratified MSE | ratio (95% bootstrap over runs) | ratio minus floor | "
             "median-error ratio | spread ratio | floor |",
             "|---|---|---|---|---|---|---|---|---|"]
    for solver in ("geodesic", "barycenter"):
        for k in (8, 24):
            e = report[solver]["variance"][f"K={k}"]
            lines.append(f"| {solver} | {k} | {e['independent_mse']:.4g} | {e['stratified_mse']:.4g} | "
                         f"{e['mse_ratio_stratified_over_independent']:.3f} ({e['mse_ratio_bootstrap_ci95'][0]:.2f}-"
                         f"{e['mse_ratio_bootstrap_ci95'][1]:.2f}) | {e['variance_ratio_after_floor']:.3f} | "
                         f"{e['median_error_ratio']:.3f} | {e['spread_ratio']:.3f} | {e['floor']:.3g} |")
    lines += ["", "## Objective reached at equal steps (seeded many-sample estimate, the same draws for both)", "",
              "| solver | steps | seed | independent | stratified | ratio |", "|---|---|---|---|---|---|"]
    for solver in ("geodesic", "barycenter"):
        o = report[solver]["objective"]
        for row in o["rows"]:
            lines.append(f"| {solver} | {o['steps']} | {row['seed']} | {row['independent']:.5g} | "
                         f"{row['stratified']:.5g} | {row['ratio']:.4f} |")
        lines.append(f"| {solver} | | mean | | | {o['mean_ratio']:.4f} ± {o['ratio_std']:.4f} (sd) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--warm-steps", type=int, default=30)
    parser.add_argument("--reference", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--geodesic-steps", type=int, default=80)
    parser.add_argument("--barycenter-steps", type=int, default=120)
    parser.add_argument("--eval-samples", type=int, default=64)
    parser.add_argument("--backbone-weights", default="random")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", choices=("geodesic", "barycenter"), default=None)
    parser.add_argument("--skip-objective", action="store_true", help="gradient variance only")
    parser.add_argument("--out", default="outputs/benchmarks")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    metric = Metric("elpips-vgg", backbone_weights=args.backbone_weights, device="cpu", seed=0)
    seeds = [int(s) for s in args.seeds.split(",")]
    report = {"metric": metric.name, "backbone": metric.weights_info.description, "platform": platform.platform(),
              "window": DEFAULT_WINDOW, "size": args.size, "frames": args.frames, "images": args.images,
              "scale_levels": metric.scale_levels or "default", "warm_steps": args.warm_steps}
    from elpips.transforms import default_scale_levels

    report["scale_levels"] = metric.scale_levels or default_scale_levels(args.size, args.size)
    solvers = [args.only] if args.only else ["geodesic", "barycenter"]
    for solver in solvers:
        if solver == "geodesic":
            gradient, size, data = geodesic_problem(metric, args.size, args.frames, args.warm_steps)
            steps = args.geodesic_steps
        else:
            gradient, size, data = barycenter_problem(metric, args.size, args.images, args.warm_steps)
            steps = args.barycenter_steps
        variance = gradient_variance(metric, gradient, size, args.reference, args.repeats)
        summary = {key: {name: value for name, value in entry.items() if not name.endswith("block_errors")}
                   if isinstance(entry, dict) else entry for key, entry in variance.items()}
        print(f"{solver} variance: {summary}", flush=True)
        report[solver] = {"variance": variance}
        if not args.skip_objective:
            report[solver]["objective"] = objective_reached(metric, solver, data, seeds, steps, args.frames,
                                                            args.eval_samples)
    name = "ensemble_stream" + (f"_{args.only}" if args.only else "") + ("_variance" if args.skip_objective else "")
    out = Path(args.out)
    write_json(out / f"{name}.json", report)
    if args.only is None and not args.skip_objective:
        write_text(out / f"{name}.md", markdown(report))
        print(markdown(report))


if __name__ == "__main__":
    main()
