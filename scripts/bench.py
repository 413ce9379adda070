"""``elpips bench``: the performance benchmark suite, writing ``outputs/benchmarks/<timestamp>.{json,md}``.

The measurements live in :mod:`elpips.benchmarks` (imported only when the command runs); this module only parses
options, shows progress and writes the results.
"""

from __future__ import annotations

import argparse
import os
import sys

from .common import add_threads_option

DEFAULT_OUT = "outputs/benchmarks"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        description="Time E-LPIPS against bare VGG16 features and the lpips package, shared-feature barycenter "
                    "and geodesic steps against naive per-pair steps, geodesic scaling and peak memory, and "
                    "the variance of stratified vs independent sampling. Paired medians on a seeded random "
                    "backbone (timings do not depend on weight values). Default run: 2.5-4 minutes on 2 shared "
                    "CPU cores with one thread; --quick: under 1 minute.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (a smoke run)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps")
    parser.add_argument("--size", type=int, default=None,
                        help="image side in pixels for every section but the resolution sweep "
                             "(default 128 for single calls and 64 for solver steps; quick: 64 and 32)")
    parser.add_argument("--batch", type=int, default=None,
                        help="images per single call and ensemble samples per solver step")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per comparison (default 5; quick 3)")
    add_threads_option(parser, help="torch intra-op threads (default 1 on the CPU: steady ratios on a shared "
                                    "machine, where threads wait for each other)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="output folder")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from elpips.benchmarks.environment import load_average
    from elpips.benchmarks.suite import make_plan, run_suite, section_count, write_results
    from elpips.solver import ProgressReport

    plan = make_plan(args.quick, args.device, args.size, args.batch, args.repeats, args.threads)
    load, cpus = load_average(), os.cpu_count() or 1
    if load is not None and load[0] > cpus:
        print(f"note: load average {load[0]:.1f} on {cpus} CPUs: timings are inflated (ratios are paired)"
              + ("; --threads 1 steadies them" if plan.threads != 1 and plan.device == "cpu" else ""),
              file=sys.stderr)
    with ProgressReport("bench", section_count(plan), unit="section") as report:
        rounds = [0]

        def tick() -> None:
            rounds[0] += 1
            report.set_postfix(rounds=rounds[0])

        def progress(name: str) -> None:
            report.set_postfix(done=name, rounds=rounds[0])
            report.update(1)

        record = run_suite(plan, progress, tick)
    json_path, markdown_path = write_results(record, args.out)
    for name, value in record["ratios"].items():
        goal = record["goals"].get(name)
        verdict = f"  (goal {goal['goal']}: {'met' if goal['met'] else 'not met'}" if goal else ""
        if goal and goal.get("applies") is False:
            verdict += ", stated at " + ", ".join(f"{key} {value}" for key, value in goal["stated_at"].items())
        verdict += ")" if goal else ""
        print(f"{name:32s} {value:8.3f}{verdict}")
    print(f"wrote {json_path} and {markdown_path} ({record['duration_s']:.0f} s)")
    return 0
