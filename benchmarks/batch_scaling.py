"""Wall time of one small ``elpips batch`` (6 tiny geodesic jobs, random backbone) run by one process and by
``torchrun --standalone --nproc-per-node=2``; writes outputs/benchmarks/batch_scaling.json.

    python -m elpips.benchmarks.batch_scaling [--jobs 6] [--repeats 2] [--size 48] [--steps 40]

Timed end to end (interpreter start, imports, process group, jobs, summary), as a user would see it. The
configurations alternate within each repeat so a change of machine load hits them alike; the load average is
recorded, and earlier reports in the file are kept under ``earlier_runs``. One process runs with torch's
default thread count and with one thread (torchrun gives each of its workers OMP_NUM_THREADS=1).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from .memory import run_child

VENV_BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def make_jobs(folder: Path, count: int, size: int, steps: int) -> Path:
    from elpips.io import save_image

    generator = torch.Generator().manual_seed(0)
    images = [str(save_image(folder / f"img{index}.png", torch.rand(1, 3, size, size, generator=generator)))
              for index in range(count + 1)]
    lines = [json.dumps({"id": f"geo{index}", "command": "geodesic", "inputs": [images[index], images[index + 1]],
                         "args": {"frames": 5, "steps": steps, "samples": 2, "metric": "elpips-vgg",
                                  "backbone-weights": "random", "seed": index, "checkpoint-every": 1000}})
             for index in range(count)]
    path = folder / "jobs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


CONFIGS = {
    "1 process (default threads)": lambda jobs, out: ([str(VENV_BIN / "python"), "-m", "elpips", "batch", jobs,
                                                        "--out", out], {}),
    "1 process, 1 thread": lambda jobs, out: ([str(VENV_BIN / "python"), "-m", "elpips", "batch", jobs,
                                               "--out", out], {"OMP_NUM_THREADS": "1"}),
    "torchrun, 2 processes x 1 thread": lambda jobs, out: ([str(VENV_BIN / "torchrun"), "--standalone",
                                                            "--nproc-per-node=2", "-m", "elpips", "batch", jobs,
                                                            "--out", out], {"OMP_NUM_THREADS": "1"}),
}


def run_batch_once(command: list[str], extra_env: dict, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, **extra_env}
    if not extra_env:
        env.pop("OMP_NUM_THREADS", None)
    load = os.getloadavg()[0]
    completed = run_child(command, env)
    wall = completed.wall_s
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    seconds = [row["seconds"] for row in summary["jobs"]]
    return {"wall_s": round(wall, 2), "batch_wall_s": summary["wall_s"],
            "job_s_mean": round(statistics.mean(seconds), 3),
            "jobs_per_rank": {str(rank): sum(row["rank"] == rank for row in summary["jobs"])
                              for rank in sorted({row["rank"] for row in summary["jobs"]})},
            "load_avg_1min_before": round(load, 2)}


def earlier_runs(path: Path) -> list[dict]:
    """The reports already in ``path`` (newest first; machine load varies, so runs are kept, not replaced)."""
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    older = previous.pop("earlier_runs", [])
    return [previous, *older]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--size", type=int, default=48, help="image side in px")
    parser.add_argument("--steps", type=int, default=40, help="geodesic steps per job")
    parser.add_argument("--out", default=str(ROOT / "outputs" / "benchmarks" / "batch_scaling.json"))
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory(prefix="batch_scaling_") as temporary:
        folder = Path(temporary)
        jobs = str(make_jobs(folder, args.jobs, args.size, args.steps))
        for repeat in range(args.repeats):
            for name, build in CONFIGS.items():
                command, env = build(jobs, str(folder / "out"))
                result = run_batch_once(command, env, folder / "out")
                runs[name].append(result)
                print(f"repeat {repeat + 1}: {name}: {result['wall_s']:.1f} s (jobs {result['job_s_mean']:.2f} s each, "
                      f"load {result['load_avg_1min_before']})", file=sys.stderr)
    best = {name: min(run["wall_s"] for run in results) for name, results in runs.items()}
    baseline = best["1 process, 1 thread"]  # like for like: torchrun gives each worker one thread
    report = {
        "what": f"{args.jobs} geodesic jobs (elpips-vgg random backbone, {args.size}x{args.size} px, 5 frames, "
                f"{args.steps} steps, 2 samples), end-to-end wall time of `elpips batch`",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "note": "CPU only; the machine is shared with other work (see load averages)"},
        "repeats": args.repeats,
        "best_wall_s": best,
        "speedup_vs_1_process_1_thread": {name: round(baseline / value, 2) for name, value in best.items()},
        "runs": runs,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    report["earlier_runs"] = earlier_runs(Path(args.out))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"best_wall_s": best, "speedup": report["speedup_vs_1_process_1_thread"]}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
