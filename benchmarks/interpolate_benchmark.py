"""``elpips interpolate`` on the CPU: seconds per interpolated frame, peak memory against clip length, and the
speed-up from sharing windows over 2 torchrun ranks. Writes ``outputs/benchmarks/interpolate.{json,md}``.

    python -m elpips.benchmarks.interpolate_benchmark [--sections speed,memory,ranks] [--steps 10]

* **speed**: one window (a keyframe pair, x4: 3 new frames) of a pan over the shipped cat at 64 and 128 px,
  ``--steps`` steps (coarse-to-fine: half of them on 3 frames, half on 5), in this process with one thread; wall
  and CPU time (on a loaded machine the CPU time is the closer measure of the work).
* **memory**: the whole command (solve, frames, videos, viewer) on a 4-frame and a 16-frame clip, each in a fresh
  process: peak resident memory (``ru_maxrss``) and wall time.
* **ranks**: an 8-frame clip (7 windows): one process with 1 and with 2 torch threads, and
  ``torchrun --standalone --nproc-per-node=2`` with 1 thread per rank; wall time of each command.

E-LPIPS-VGG on the seeded random backbone (timings do not depend on weight values). The load average is recorded:
on a shared machine the times are inflated, the ratios less so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from elpips import Metric
from elpips.clips import pan_frames
from elpips.geodesics import SolveSettings, plan_windows, solve_window
from elpips.io import load_image, save_image, write_json, write_text

from .memory import probe_command, run_child
from .timing import timed_call

RANDOM = ["--backbone-weights", "random", "--metric", "elpips-vgg", "--samples", "1", "--seed", "0"]
CLI = "elpips.scripts.cli:main"
"""The ``elpips`` command's entry point, called in a fresh process by :func:`elpips.benchmarks.memory.probe_command`."""


def write_clip(folder: Path, count: int, size: int) -> Path:
    for index, frame in enumerate(pan_frames(load_image("example:cat"), count, size)):
        save_image(folder / f"frame_{index:03d}.png", frame)
    return folder


def speed(size: int, steps: int, factor: int = 4) -> dict:
    torch.set_num_threads(1)
    metric = Metric("elpips-vgg", backbone_weights="random", device="cpu", seed=0)
    keys = pan_frames(load_image("example:cat"), 2, size)
    window = plan_windows(2)[0]
    times, cpu_times = [], []
    solve_window(keys, metric, window=window, factor=factor, seed=0,
                 settings=SolveSettings(steps=1, eval_samples=1))  # warm-up
    for seed in (1, 2):
        timed = timed_call(lambda seed=seed: solve_window(keys, metric, window=window, factor=factor, seed=seed,
                                                settings=SolveSettings(steps=steps, eval_samples=1)))
        times.append(timed.wall_s)
        cpu_times.append(timed.cpu_s)
    best, cpu = min(times), min(cpu_times)
    new_frames = factor - 1
    return {"size": size, "factor": factor, "steps": steps, "window_s": [round(t, 2) for t in times],
            "window_cpu_s": [round(t, 2) for t in cpu_times],
            "seconds_per_interpolated_frame": round(best / new_frames, 3),
            "cpu_seconds_per_interpolated_frame": round(cpu / new_frames, 3),
            "cpu_seconds_per_interpolated_frame_per_step": round(cpu / new_frames / steps, 4),
            "extrapolated_cpu_seconds_per_frame_at_200_steps": round(cpu / new_frames / steps * 200, 1)}


def probe(argv: list[str], threads: int, launcher: list[str] | None = None) -> dict:
    """Run ``elpips ARGV`` in a fresh process (or under ``launcher``) with ``threads`` torch threads."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = probe_command(CLI, argv) if launcher is None else [*launcher, "-m", "elpips", *argv]
    done = run_child(command, env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr[-2000:]}")
    result = done.last_json() if launcher is None else {}
    return {**result, "process_wall_s": round(done.wall_s, 2)}


def memory(folder: Path, steps: int) -> dict:
    rows = {}
    for count in (4, 16):
        clip = write_clip(folder / f"clip{count}", count, 64)
        rows[f"{count}_frames"] = probe(["interpolate", str(clip), "--factor", "4", "--steps", str(steps), *RANDOM,
                                         "--out", str(folder / f"run{count}")], threads=1)
    rows["peak_ratio_16_vs_4"] = round(rows["16_frames"]["peak_rss_mib"] / rows["4_frames"]["peak_rss_mib"], 3)
    return rows


def ranks(folder: Path, steps: int) -> dict:
    clip = write_clip(folder / "clip8", 8, 64)
    argv = ["interpolate", str(clip), "--factor", "4", "--steps", str(steps), *RANDOM]
    torchrun = Path(sys.executable).parent / "torchrun"
    rows = {"one_process_1_thread": probe([*argv, "--out", str(folder / "r1")], threads=1),
            "one_process_2_threads": probe([*argv, "--out", str(folder / "r2")], threads=2),
            "torchrun_2_ranks_1_thread": probe([*argv, "--out", str(folder / "r3")], threads=1,
                                               launcher=[str(torchrun), "--standalone", "--nproc-per-node=2"])}
    for name in rows:
        log = json.loads((folder / {"one_process_1_thread": "r1", "one_process_2_threads": "r2",
                                    "torchrun_2_ranks_1_thread": "r3"}[name] / "log.json").read_text())
        rows[name]["command_wall_s"] = log["timings"]["wall_s_this_call"]
        rows[name]["processes"] = log["processes"]
    base = rows["one_process_1_thread"]["command_wall_s"]
    rows["speedup_2_ranks_vs_1_thread"] = round(base / rows["torchrun_2_ranks_1_thread"]["command_wall_s"], 3)
    rows["speedup_2_ranks_vs_2_threads"] = round(rows["one_process_2_threads"]["command_wall_s"]
                                                 / rows["torchrun_2_ranks_1_thread"]["command_wall_s"], 3)
    return rows


def markdown(report: dict) -> str:
    lines = [f"# elpips interpolate on the CPU ({report['timestamp']})", "",
             f"E-LPIPS-VGG, random backbone; load average {report['load_average_1min']} on {report['cpus']} CPUs "
             "at the start (a shared machine: absolute times are inflated).", ""]
    if "speed" in report:
        lines += ["| size | steps | wall s per new frame | CPU s per new frame | CPU s per new frame and step | "
                  "CPU s per new frame at 200 steps (extrapolated) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for row in report["speed"]:
            lines.append(f"| {row['size']} px | {row['steps']} | {row['seconds_per_interpolated_frame']} | "
                         f"{row['cpu_seconds_per_interpolated_frame']} | "
                         f"{row['cpu_seconds_per_interpolated_frame_per_step']} | "
                         f"{row['extrapolated_cpu_seconds_per_frame_at_200_steps']} |")
        lines.append("")
    if "memory" in report:
        rows = report["memory"]
        lines += [f"Peak memory: 4 frames {rows['4_frames']['peak_rss_mib']:.0f} MiB "
                  f"({rows['4_frames']['wall_s']:.0f} s), 16 frames {rows['16_frames']['peak_rss_mib']:.0f} MiB "
                  f"({rows['16_frames']['wall_s']:.0f} s): ratio {rows['peak_ratio_16_vs_4']}.", ""]
    if "ranks" in report:
        rows = report["ranks"]
        lines += ["| 8-frame clip, 7 windows | command wall s | process wall s |", "| --- | ---: | ---: |"]
        for name in ("one_process_1_thread", "one_process_2_threads", "torchrun_2_ranks_1_thread"):
            lines.append(f"| {name.replace('_', ' ')} | {rows[name]['command_wall_s']:.1f} | "
                         f"{rows[name]['process_wall_s']:.1f} |")
        lines += ["", f"Speed-up of 2 ranks: {rows['speedup_2_ranks_vs_1_thread']}x over one process with one thread, "
                  f"{rows['speedup_2_ranks_vs_2_threads']}x over one process with two threads."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="speed,memory,ranks")
    parser.add_argument("--steps", type=int, default=10, help="steps per window of the speed section (10)")
    parser.add_argument("--command-steps", type=int, default=4, help="steps per window of memory/ranks (4)")
    parser.add_argument("--out", default="outputs/benchmarks/interpolate")
    args = parser.parse_args()
    sections = args.sections.split(",")
    report: dict = {"what": __doc__.splitlines()[0], "cpus": os.cpu_count(), "torch": torch.__version__,
                    "load_average_1min": round(os.getloadavg()[0], 1), "backbone": "random (seeded)",
                    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with tempfile.TemporaryDirectory(prefix="elpips-interpolate-bench-") as scratch:
        if "speed" in sections:
            report["speed"] = [speed(size, args.steps) for size in (64, 128)]
        if "memory" in sections:
            report["memory"] = memory(Path(scratch), args.command_steps)
        if "ranks" in sections:
            report["ranks"] = ranks(Path(scratch), args.command_steps)
    report["load_average_1min_end"] = round(os.getloadavg()[0], 1)
    write_json(f"{args.out}.json", report)
    write_text(f"{args.out}.md", markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
