"""Time to quality: the seeded many-sample objective each solver variant reaches in the same CPU seconds.

Barycenter of ``count`` shifted copies (``elpips.barycenters.shifted_copies``) of the shipped cat, ``size`` px;
geodesic from the cat to the dog, ``frames`` frames, ``path_size`` px. Variants (where the solver offers them):

* ``reference``: the barycenter with ``refs_per_step=1`` (one reference per step, as in the paper); the geodesic
  solver has no per-pair mode, so the geodesic skips it.
* ``default``: the solver's defaults (float32).
* ``bfloat16``: the defaults with ``Metric(precision="bfloat16")``.
* ``default_averaged`` (barycenter only): the mean of the default run's iterates over its last ``average_last``
  fraction of steps (Polyak averaging, taken from the callback's iterates; the geodesic's callback carries no
  iterate, so it is not measured there).

Every run starts from the solvers' default start (barycenter: noise). Equal time: each variant first runs
``calibration_steps`` steps; its step count is then ``budget / CPU seconds per step`` (so every schedule runs to its
end), and the run's own CPU seconds are recorded. The objective is evaluated afterwards in float32 with
``eval_samples`` seeded samples (the same for every variant). Seeded random backbone weights (the shapes of the
curves, not ImageNet's numbers). Writes ``<out>/time_to_quality-<stamp>.json`` and ``.md``.

    python -m elpips.benchmarks.time_to_quality --budget 20 --out outputs/benchmarks
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from elpips import Metric
from elpips.io import write_json, write_text

from .environment import environment, load_average
from .measurements import example_images
from .timing import timed_call


def _metric(precision: str = "float32") -> Metric:
    return Metric("elpips-vgg", backbone_weights="random", device="cpu", seed=0, precision=precision)


def _steps_for(budget_s: float, run, calibration_steps: int) -> tuple[int, float]:
    """Steps that fill ``budget_s`` CPU seconds: the fixed cost of a run (set-up, start and end evaluations) and
    the cost of a step from two short runs (``calibration_steps`` and twice as many)."""
    short = timed_call(lambda: run(calibration_steps)).cpu_s
    longer = timed_call(lambda: run(2 * calibration_steps)).cpu_s
    per_step = max(longer - short, 1e-9) / calibration_steps
    fixed = max(short - per_step * calibration_steps, 0.0)
    return max(calibration_steps, int((budget_s - fixed) / per_step)), per_step


def barycenter_rows(budget_s: float, size: int, count: int, seed: int, eval_samples: int, average_last: float,
                    calibration_steps: int) -> list[dict]:
    from elpips.barycenters import evaluate_objective, shifted_copies, solve

    cat, _ = example_images(size + 8, "cpu")
    images, _ = shifted_copies(cat, count, max_shift=4, generator=torch.Generator().manual_seed(seed))
    images = images[..., 4:4 + size, 4:4 + size].contiguous()
    weights = torch.full((count,), 1.0 / count)
    evaluator = _metric()

    def objective(x: torch.Tensor) -> float:
        return evaluate_objective(evaluator, x, images, weights, 2.0, samples=eval_samples, seed=seed).objective

    rows = []
    for variant, precision, options in (("reference", "float32", {"refs_per_step": 1}),
                                        ("default", "float32", {}), ("bfloat16", "bfloat16", {})):
        metric = _metric(precision)

        def run(steps: int, callback=None, metric=metric, options=options):
            return solve(images, metric, steps=steps, generator=seed, callback=callback,
                         eval_samples=1, **options)

        steps, per_step = _steps_for(budget_s, run, calibration_steps)
        tail: list[torch.Tensor] = []
        first_averaged = int(steps * (1 - average_last)) + 1

        def keep(info, tail=tail, first_averaged=first_averaged) -> None:
            if info.step >= first_averaged:
                tail.append(info.image.detach().clone())

        timed = timed_call(lambda: run(steps, keep))  # noqa: B023  (called at once)
        rows.append({"solver": "barycenter", "variant": variant, "steps": steps, "cpu_s": timed.cpu_s,
                     "wall_s": timed.wall_s, "cpu_s_per_step": per_step, "objective": objective(timed.value.image)})
        if variant == "default" and tail:
            averaged = torch.stack(tail).mean(dim=0)
            rows.append({"solver": "barycenter", "variant": f"default_averaged_last_{average_last:g}",
                         "steps": steps, "cpu_s": timed.cpu_s, "wall_s": timed.wall_s, "cpu_s_per_step": per_step,
                         "averaged_iterates": len(tail), "objective": objective(averaged)})
    return rows


def geodesic_rows(budget_s: float, size: int, frames: int, seed: int, eval_samples: int,
                  calibration_steps: int) -> list[dict]:
    from elpips.geodesics import evaluate_path, solve

    cat, dog = example_images(size, "cpu")
    keyframes = torch.cat([cat, dog])
    evaluator = _metric()

    def energy(path: torch.Tensor) -> float:
        return evaluate_path(evaluator, path, samples=eval_samples,
                             generator=torch.Generator().manual_seed(seed)).energy

    rows = [{"solver": "geodesic", "variant": "reference", "skipped": "no per-pair mode in the geodesic solver"}]
    for variant, precision in (("default", "float32"), ("bfloat16", "bfloat16")):
        metric = _metric(precision)

        def run(steps: int, metric=metric):
            return solve(keyframes, metric, frames=frames, steps=steps, generator=seed, eval_samples=1)

        steps, per_step = _steps_for(budget_s, run, calibration_steps)
        timed = timed_call(lambda: run(steps))  # noqa: B023  (called at once)
        rows.append({"solver": "geodesic", "variant": variant, "steps": steps, "cpu_s": timed.cpu_s,
                     "wall_s": timed.wall_s, "cpu_s_per_step": per_step, "objective": energy(timed.value.frames)})
    linear = torch.lerp(cat, dog, torch.linspace(0, 1, frames)[:, None, None, None])
    rows.append({"solver": "geodesic", "variant": "linear_start", "steps": 0, "objective": energy(linear)})
    return rows


def render(record: dict) -> str:
    plan = record["plan"]
    lines = [f"# Time to quality ({plan['budget_s']:g} CPU s per variant, seed {plan['seed']}, "
             f"{plan['threads']} thread)", "",
             f"Load average at start {record['load_average_start']}, at end {record['load_average_end']}; "
             f"torch {record['environment']['torch']}. Objective: seeded {plan['eval_samples']}-sample estimate "
             "in float32 (barycenter: sum_i d(x, x_i)^2 / N; geodesic: path energy). Lower is better.", "",
             "| solver | variant | steps | CPU s | objective |", "|---|---|---|---|---|"]
    for row in record["rows"]:
        if "skipped" in row:
            lines.append(f"| {row['solver']} | {row['variant']} | — | — | skipped: {row['skipped']} |")
        else:
            cpu = f"{row['cpu_s']:.1f}" if "cpu_s" in row else "—"
            lines.append(f"| {row['solver']} | {row['variant']} | {row['steps']} | {cpu} | {row['objective']:.4e} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m elpips.benchmarks.time_to_quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=20.0, help="CPU seconds per variant")
    parser.add_argument("--size", type=int, default=48, help="barycenter image side")
    parser.add_argument("--count", type=int, default=10, help="shifted copies in the barycenter")
    parser.add_argument("--path-size", type=int, default=64, help="geodesic image side")
    parser.add_argument("--frames", type=int, default=8, help="geodesic frames, keyframes included")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-samples", type=int, default=32)
    parser.add_argument("--average-last", type=float, default=0.3, help="fraction of steps averaged")
    parser.add_argument("--calibration-steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--solvers", default="barycenter,geodesic")
    parser.add_argument("--out", default="outputs/benchmarks")
    args = parser.parse_args(argv)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(previous_threads)


def _run(args: argparse.Namespace) -> int:
    record = {"schema": "elpips-time-to-quality/1", "plan": {
        "budget_s": args.budget, "size": args.size, "count": args.count, "path_size": args.path_size,
        "frames": args.frames, "seed": args.seed, "eval_samples": args.eval_samples,
        "average_last": args.average_last, "threads": args.threads, "backbone": "seeded random"},
        "environment": environment(torch.device("cpu")), "load_average_start": load_average(), "rows": []}
    solvers = args.solvers.split(",")
    if "barycenter" in solvers:
        record["rows"] += barycenter_rows(args.budget, args.size, args.count, args.seed, args.eval_samples,
                                          args.average_last, args.calibration_steps)
    if "geodesic" in solvers:
        record["rows"] += geodesic_rows(args.budget, args.path_size, args.frames, args.seed, args.eval_samples,
                                        args.calibration_steps)
    record["load_average_end"] = load_average()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = Path(args.out)
    json_path = write_json(folder / f"time_to_quality-{stamp}.json", record)
    write_text(folder / f"time_to_quality-{stamp}.md", render(record))
    print(render(record) + f"\nwrote {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
