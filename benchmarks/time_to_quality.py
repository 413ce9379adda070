"""Time to quality: the seeded many-sample objective each solver variant reaches in the same CPU seconds.

Barycenter of ``count`` shifted copies (``elpips.barycenters.shifted_copies``) of the shipped cat, ``size`` px,
noise start; geodesic from the cat to the dog, ``frames`` frames, ``path_size`` px, linear start. Variants:

* ``reference`` (barycenter): ``refs_per_step=1``, one reference per step as in the paper, last iterate. The
  geodesic solver has no per-pair mode, so the geodesic has no reference row.
* ``last_iterate``: every reference per step (the solver's shared step), ``average_last=0``.
* ``averaged``: the same with ``average_last`` (the iterates of that last fraction of the steps averaged,
  :mod:`elpips.solver.averaging`).
* ``averaged_last_quarter`` (geodesic): ``average_last=0.25``, against the default's last stage.
* ``bfloat16_averaged``: ``averaged`` with ``Metric(precision="bfloat16")``.
* ``l2_mean`` / ``linear_start`` (no steps): the pixel mean of the copies, the linear blend.

Each barycenter variant runs at every ``fractions`` of ``budget`` CPU seconds (the reference at the whole budget
only), the geodesic's at ``path_budget``. Equal time: each variant first runs ``calibration_steps`` steps and
twice as many; its step count is then ``budget / CPU seconds per step`` (so every schedule runs to its end), and
the run's own CPU seconds are recorded. ``--floor S`` adds one ``averaged`` barycenter run of ``S`` CPU seconds (the
first seed): an estimate of how low the objective goes. The objective is evaluated afterwards in float32 with
``eval_samples`` seeded samples (the same for every variant). Inside the run, the barycenter's own evaluations use
one sample (its noise start is far above any iterate), the geodesic's final "below the start?" check keeps the
solver's default samples (its costs are in the budget). Seeded random backbone weights (the shapes of the
curves, not ImageNet's numbers). Writes ``<out>/time_to_quality-<stamp>.json`` and ``.md``; ``--summarize
A.json B.json ...`` renders the summary over several such runs (say, one per seed, run side by side).

    python -m elpips.benchmarks.time_to_quality --budget 120 --seeds 0 --out outputs/benchmarks
    python -m elpips.benchmarks.time_to_quality --summarize outputs/benchmarks/time_to_quality-*.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from elpips import Metric
from elpips.io import write_json, write_text
from elpips.solver.averaging import DEFAULT_AVERAGE_LAST

from .environment import environment, load_average
from .measurements import example_images
from .timing import timed_call


def _metric(precision: str = "float32") -> Metric:
    return Metric("elpips-vgg", backbone_weights="random", device="cpu", seed=0, precision=precision)


def _steps_for(budget_s: float, run: Callable[[int], Any], calibration_steps: int) -> tuple[int, float]:
    """Steps that fill ``budget_s`` CPU seconds: the fixed cost of a run (set-up, start and end evaluations) and
    the cost of a step from two short runs (``calibration_steps`` and twice as many)."""
    short = timed_call(lambda: run(calibration_steps)).cpu_s
    longer = timed_call(lambda: run(2 * calibration_steps)).cpu_s
    # Timer noise can make the difference tiny or negative; a step costs at least a quarter of the longer run's share.
    per_step = max(longer - short, longer / 8) / calibration_steps
    fixed = max(short - per_step * calibration_steps, 0.0)
    return max(calibration_steps, int((budget_s - fixed) / per_step)), per_step


def _timed_row(solver: str, variant: str, seed: int, budget_s: float, run: Callable[[int], Any],
               calibration_steps: int, objective: Callable[[Any], float]) -> dict:
    steps, per_step = _steps_for(budget_s, run, calibration_steps)
    timed = timed_call(lambda: run(steps))
    return {"solver": solver, "variant": variant, "seed": seed, "budget_s": budget_s, "steps": steps,
            "cpu_s": timed.cpu_s, "wall_s": timed.wall_s, "cpu_s_per_step": per_step,
            "averaged_iterates": timed.value.averaged_iterates, "objective": objective(timed.value)}


def barycenter_rows(budget_s: float, fractions: list[float], size: int, count: int, seed: int, eval_samples: int,
                    average_last: float, calibration_steps: int, floor_s: float = 0.0) -> list[dict]:
    from elpips.barycenters import evaluate_objective, shifted_copies, solve

    cat, _ = example_images(size + 8, "cpu")
    images, _ = shifted_copies(cat, count, max_shift=4, generator=torch.Generator().manual_seed(seed))
    images = images[..., 4:4 + size, 4:4 + size].contiguous()
    weights = torch.full((count,), 1.0 / count)
    evaluator = _metric()

    def objective(image: torch.Tensor) -> float:
        return evaluate_objective(evaluator, image, images, weights, 2.0, samples=eval_samples, seed=seed).objective

    def runner(precision: str, **options: Any) -> Callable[[int], Any]:
        metric = _metric(precision)
        return lambda steps: solve(images, metric, steps=steps, generator=seed, eval_samples=1, **options)

    variants = [("last_iterate", runner("float32", average_last=0.0)),
                ("averaged", runner("float32", average_last=average_last)),
                ("bfloat16_averaged", runner("bfloat16", average_last=average_last))]
    rows = [{"solver": "barycenter", "variant": "l2_mean", "seed": seed, "steps": 0,
             "objective": objective(images.mean(dim=0, keepdim=True))}]
    rows.append(_timed_row("barycenter", "reference", seed, budget_s, runner("float32", refs_per_step=1,
                                                                             average_last=0.0),
                           calibration_steps, lambda result: objective(result.image)))
    for fraction in fractions:
        for variant, run in variants:
            rows.append(_timed_row("barycenter", variant, seed, budget_s * fraction, run, calibration_steps,
                                   lambda result: objective(result.image)))
    if floor_s > 0:
        rows.append(_timed_row("barycenter", "averaged_floor", seed, floor_s, variants[1][1], calibration_steps,
                               lambda result: objective(result.image)))
    return rows


def geodesic_rows(budget_s: float, size: int, frames: int, seed: int, eval_samples: int, average_last: float,
                  calibration_steps: int) -> list[dict]:
    from elpips.geodesics import evaluate_path, solve

    cat, dog = example_images(size, "cpu")
    keyframes = torch.cat([cat, dog])
    evaluator = _metric()

    def energy(path: torch.Tensor) -> float:
        return evaluate_path(evaluator, path, samples=eval_samples,
                             generator=torch.Generator().manual_seed(seed)).energy

    def runner(precision: str, average: float) -> Callable[[int], Any]:
        metric = _metric(precision)
        # The solver's own final check keeps its default samples: with one, "is the solved path below its start?"
        # is decided by a single ensemble sample and can hand back the linear start.
        return lambda steps: solve(keyframes, metric, frames=frames, steps=steps, generator=seed,
                                   average_last=average)

    linear = torch.lerp(cat, dog, torch.linspace(0, 1, frames)[:, None, None, None])
    rows = [{"solver": "geodesic", "variant": "linear_start", "seed": seed, "steps": 0, "objective": energy(linear)}]
    for variant, run in (("last_iterate", runner("float32", 0.0)), ("averaged", runner("float32", average_last)),
                         ("averaged_last_quarter", runner("float32", 0.25)),
                         ("bfloat16_averaged", runner("bfloat16", average_last))):
        rows.append(_timed_row("geodesic", variant, seed, budget_s, run, calibration_steps,
                               lambda result: energy(result.frames)))
    return rows


def summarize(rows: list[dict]) -> dict:
    """Per solver, variant and budget: the median objective over seeds, its ratio to the start row's (L2 mean or
    linear blend), and, per budget, in how many seeds each variant reached the reference's whole-budget objective."""
    groups: dict[tuple[str, str, float], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["solver"], row["variant"], round(row.get("budget_s", 0.0), 3)), []).append(row)
    starts = {(row["solver"], row["seed"]): row["objective"] for row in rows
              if row["variant"] in ("l2_mean", "linear_start")}
    references = {row["seed"]: row["objective"] for row in rows
                  if row["solver"] == "barycenter" and row["variant"] == "reference"}
    summary = []
    for (solver, variant, budget), members in sorted(groups.items()):
        entry: dict[str, Any] = {
            "solver": solver, "variant": variant, "budget_s": budget, "seeds": len(members),
            "median_objective": statistics.median(row["objective"] for row in members),
            "median_vs_start": statistics.median(row["objective"] / starts[solver, row["seed"]] - 1
                                                 for row in members if (solver, row["seed"]) in starts),
            "median_cpu_s": statistics.median(row.get("cpu_s", 0.0) for row in members),
            "median_steps": statistics.median(row["steps"] for row in members)}
        paired = [row for row in members if row["seed"] in references]
        if solver == "barycenter" and paired and variant not in ("l2_mean", "reference"):
            entry["seeds_at_or_below_reference"] = sum(row["objective"] <= references[row["seed"]] for row in paired)
        summary.append(entry)
    return {"rows": summary}


def render(record: dict) -> str:
    plan = record["plan"]
    lines = [f"# Time to quality (budget {plan['budget_s']:g} CPU s, seeds {plan['seeds']}, "
             f"{plan['threads']} thread)", "",
             f"Load average at start {record['load_average_start']}, at end {record['load_average_end']}; "
             f"torch {record['environment']['torch']}. Objective: seeded {plan['eval_samples']}-sample estimate "
             "in float32 (barycenter: sum_i d(x, x_i)^2 / N; geodesic: path energy). Lower is better.", "",
             "| solver | variant | seed | steps | CPU s | objective |", "|---|---|---|---|---|---|"]
    for row in record["rows"]:
        cpu = f"{row['cpu_s']:.1f}" if "cpu_s" in row else "—"
        lines.append(f"| {row['solver']} | {row['variant']} | {row['seed']} | {row['steps']} | {cpu} | "
                     f"{row['objective']:.4e} |")
    return "\n".join(lines) + "\n\n" + render_summary(summarize(record["rows"]))


def render_summary(summary: dict) -> str:
    lines = ["| solver | variant | budget CPU s | seeds | median CPU s | median steps | median objective | "
             "vs L2 mean / linear start | seeds <= reference |", "|---|---|---|---|---|---|---|---|---|"]
    for entry in summary["rows"]:
        budget = f"{entry['budget_s']:g}" if entry["budget_s"] else "—"
        at_or_below = entry.get("seeds_at_or_below_reference")
        reached = "—" if at_or_below is None else f"{at_or_below}/{entry['seeds']}"
        lines.append(f"| {entry['solver']} | {entry['variant']} | {budget} | {entry['seeds']} | "
                     f"{entry['median_cpu_s']:.1f} | {entry['median_steps']:g} | {entry['median_objective']:.4e} | "
                     f"{100 * entry['median_vs_start']:+.1f}% | "
                     f"{reached} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m elpips.benchmarks.time_to_quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=120.0, help="CPU seconds of the barycenter's reference")
    parser.add_argument("--fractions", default="0.3333,1", help="barycenter budgets as fractions of --budget")
    parser.add_argument("--path-budget", type=float, default=60.0, help="CPU seconds per geodesic variant")
    parser.add_argument("--floor", type=float, default=0.0, help="CPU seconds of one long averaged barycenter run")
    parser.add_argument("--size", type=int, default=48, help="barycenter image side")
    parser.add_argument("--count", type=int, default=10, help="shifted copies in the barycenter")
    parser.add_argument("--path-size", type=int, default=64, help="geodesic image side")
    parser.add_argument("--frames", type=int, default=8, help="geodesic frames, keyframes included")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (copies' shifts and solver draws)")
    parser.add_argument("--eval-samples", type=int, default=32)
    parser.add_argument("--average-last", type=float, default=DEFAULT_AVERAGE_LAST,
                        help="barycenter: fraction of the steps averaged")
    parser.add_argument("--path-average-last", type=float, default=DEFAULT_AVERAGE_LAST,
                        help="geodesic: fraction of the steps averaged")
    parser.add_argument("--calibration-steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--solvers", default="barycenter,geodesic")
    parser.add_argument("--out", default="outputs/benchmarks")
    parser.add_argument("--summarize", nargs="+", metavar="JSON", default=None,
                        help="render the summary of these earlier runs' JSON files (runs nothing)")
    args = parser.parse_args(argv)
    if args.summarize:
        rows = [row for name in args.summarize for row in json.loads(Path(name).read_text())["rows"]]
        print(render_summary(summarize(rows)))
        return 0
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(previous_threads)


def _run(args: argparse.Namespace) -> int:
    seeds = [int(seed) for seed in args.seeds.split(",")]
    fractions = [float(fraction) for fraction in args.fractions.split(",")]
    record: dict[str, Any] = {"schema": "elpips-time-to-quality/2", "plan": {
        "budget_s": args.budget, "fractions": fractions, "path_budget_s": args.path_budget, "floor_s": args.floor,
        "size": args.size, "count": args.count, "path_size": args.path_size, "frames": args.frames, "seeds": seeds,
        "eval_samples": args.eval_samples, "average_last": args.average_last,
        "path_average_last": args.path_average_last, "threads": args.threads, "backbone": "seeded random",
        "solver_eval_samples": {"barycenter": 1, "geodesic": "default"}},
        "environment": environment(torch.device("cpu")), "load_average_start": load_average(), "rows": []}
    solvers = args.solvers.split(",")
    for index, seed in enumerate(seeds):
        if "barycenter" in solvers:
            record["rows"] += barycenter_rows(args.budget, fractions, args.size, args.count, seed, args.eval_samples,
                                              args.average_last, args.calibration_steps,
                                              args.floor if index == 0 else 0.0)
        if "geodesic" in solvers:
            record["rows"] += geodesic_rows(args.path_budget, args.path_size, args.frames, seed, args.eval_samples,
                                            args.path_average_last, args.calibration_steps)
    record["load_average_end"] = load_average()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = Path(args.out)
    json_path = write_json(folder / f"time_to_quality-{stamp}-{'_'.join(map(str, seeds))}.json", record)
    write_text(json_path.with_suffix(".md"), render(record))
    print(render(record) + f"\nwrote {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
