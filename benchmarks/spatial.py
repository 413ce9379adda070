"""Cost of a distance map: time against the scalar distance at the same ensemble transforms, and peak memory by
chunk size (fresh processes, with the helpers of :mod:`.memory`).

* **time**: ``elpips.spatial.distance_map(metric, x, y, n)`` vs ``metric.sample_distances(x, y, n)`` without
  autograd, interleaved, both drawing their transforms from generators seeded alike (the same transform record;
  the map draws its dropout masks per sample, the scalar distance per batch, so those differ in value only).
* **memory**: peak RSS above the resident set before one map of ``n`` samples, for one sample per network pass
  and for all ``n`` in one pass, and for the scalar distance of ``n`` samples (one pass).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

import torch
from elpips import Metric
from elpips.spatial import distance_map

from .measurements import example_images, timing_metric
from .memory import measure_in_child, peak_rss_step
from .timing import paired_ratio, paired_timings, summarize


def measure_spatial(metric: Metric, size: int, samples: int, repeats: int, warmup: int,
                    tick: Callable[[], None] | None = None) -> dict:
    """Median times of the map and the scalar distance of ``samples`` samples of (cat, dog) at ``size`` px, and
    ``map_vs_distance``, the median per-round ratio."""

    x, y = example_images(size, metric.device)

    @torch.no_grad()
    def spatial() -> None:
        distance_map(metric, x, y, samples, generator=torch.Generator().manual_seed(0), chunk_size=samples)

    @torch.no_grad()
    def scalar() -> None:
        metric.sample_distances(x, y, samples, generator=torch.Generator().manual_seed(0))

    times = paired_timings({"map": spatial, "distance": scalar}, repeats, warmup, metric.device, tick)
    return {"size": size, "samples": samples, "timings": {name: summarize(t) for name, t in times.items()},
            "ratios": {"map_vs_distance": paired_ratio(times["map"], times["distance"])}}


def _work(size: int, samples: int, chunk: int | None, side: str) -> Callable[[], None]:
    metric = timing_metric("cpu")
    x, y = example_images(size, "cpu")

    @torch.no_grad()
    def run() -> None:
        if side == "map":
            distance_map(metric, x, y, samples, generator=torch.Generator().manual_seed(0), chunk_size=chunk)
        else:
            metric.sample_distances(x, y, samples, generator=torch.Generator().manual_seed(0))

    return run


def measure_in_process(size: int, samples: int, chunk: int | None, side: str) -> dict:
    """Peak RSS increase (MiB) of one call in this process (meant for a fresh one), after a warm-up call."""
    result = peak_rss_step(_work(size, samples, chunk, side))
    return result if "error" in result else {"peak_mib": result["step_peak_mib"]}


def measure_spatial_memory(size: int, samples: int, timeout: float = 600) -> dict:
    """Peak memory of a map with 1 and ``samples`` samples per pass and of the scalar distance, each in a fresh
    interpreter with this process's thread count."""
    rows = []
    for side, chunk in (("map", 1), ("map", samples), ("distance", None)):
        command = [sys.executable, "-m", "elpips.benchmarks.spatial", "--size", str(size), "--samples",
                   str(samples), "--side", side, "--threads", str(torch.get_num_threads())]
        if chunk is not None:
            command += ["--chunk", str(chunk)]
        result = measure_in_child(command, timeout=timeout)
        rows.append({"side": side, "chunk": chunk if chunk is not None else "-", **result})
    return {"size": size, "samples": samples, "method": "peak RSS (VmHWM - VmRSS) in a fresh process",
            "rows": rows}


def render_markdown(section: dict) -> list[str]:
    """The report's lines for the ``spatial`` section."""
    timing = section["timing"]
    lines = [f"## Distance map vs scalar distance ({timing['size']} px, {timing['samples']} samples, no grad)", "",
             f"Map / distance time: **{timing['ratios']['map_vs_distance']:.2f}** (median "
             f"{timing['timings']['map']['median_s'] * 1000:.0f} ms vs "
             f"{timing['timings']['distance']['median_s'] * 1000:.0f} ms).", ""]
    memory = section.get("memory")
    if memory:
        lines += [f"Peak memory at {memory['size']} px, {memory['samples']} samples ({memory['method']}):", "",
                  "| side | samples per pass | peak |", "|---|---|---|"]
        lines += [f"| {r['side']} | {r['chunk'] if r['side'] == 'map' else memory['samples']} | "
                  + (f"{r['peak_mib']:.0f} MiB |" if "peak_mib" in r else f"{r.get('error', '-')} |")
                  for r in memory["rows"]]
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Child-process entry point: print one JSON line with the measurement."""
    parser = argparse.ArgumentParser(description="peak RSS of one distance map or distance (one configuration)")
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--samples", type=int, required=True)
    parser.add_argument("--chunk", type=int, default=None)
    parser.add_argument("--side", choices=("map", "distance"), required=True)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(measure_in_process(args.size, args.samples, args.chunk, args.side)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
