"""One geodesic solved by 1 process vs sharded over 2 gloo processes (CPU): step time, peak memory per rank,
and the agreement of the energies. Writes ``outputs/benchmarks/geodesic_sharding.json``.

    python -m elpips.benchmarks.geodesic_sharding [--size 64] [--frames 17] [--steps 8]

Each process uses one torch thread; the random backbone (timings do not depend on weight values).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp
from elpips import Metric
from elpips.distributed import process_group, rank_and_world
from elpips.geodesics import solve
from elpips.io import write_json

from .memory import own_peak_rss_mib


def _keyframes(size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, size, size, generator=generator) * 0.8 + 0.1


def _run(size: int, frames: int, steps: int, shard: bool) -> dict:
    torch.set_num_threads(1)
    metric = Metric("elpips-vgg", backbone_weights="random", device="cpu", seed=0)
    times: list[float] = []
    result = solve(_keyframes(size), metric, frames=frames, steps=steps, lr=0.01,
                   generator=torch.Generator().manual_seed(1), callback=lambda info: times.append(info.seconds),
                   chunk_size=frames, eval_samples=2, coarse_to_fine=False, shard=shard)
    rank, world = rank_and_world()
    return {"rank": rank, "processes": world, "step_s_median": sorted(times[1:])[len(times[1:]) // 2],
            "energy_history": result.energy_history,
            "peak_rss_mib": own_peak_rss_mib()}


def _worker(rank: int, world: int, port: int, options: dict, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    with process_group("cpu"):
        report = _run(**options, shard=True)
    Path(folder, f"rank{rank}.json").write_text(json.dumps(report))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", default="outputs/benchmarks/geodesic_sharding.json")
    args = parser.parse_args()
    options = {"size": args.size, "frames": args.frames, "steps": args.steps}
    folder = Path(args.out).parent / "geodesic_sharding_ranks"
    folder.mkdir(parents=True, exist_ok=True)
    mp.spawn(_worker, args=(2, _free_port(), options, str(folder)), nprocs=2, join=True)
    ranks = [json.loads((folder / f"rank{rank}.json").read_text()) for rank in range(2)]
    with mp.get_context("spawn").Pool(1) as pool:  # a fresh process, so its peak memory is its own
        single = pool.apply(_run, (args.size, args.frames, args.steps, False))
    energy_difference = max(abs(a - b) / abs(b)
                            for a, b in zip(ranks[0]["energy_history"], single["energy_history"], strict=False))
    report = {
        "what": "one geodesic step (all frames under one shared sample, forward+backward), 1 vs 2 processes",
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
        "threads_per_process": 1, "backbone": "random", **options,
        "one_process": {"step_s_median": single["step_s_median"], "peak_rss_mib": single["peak_rss_mib"]},
        "two_processes": {"step_s_median": max(r["step_s_median"] for r in ranks),
                          "peak_rss_mib_per_rank": [r["peak_rss_mib"] for r in ranks]},
        "speedup": single["step_s_median"] / max(r["step_s_median"] for r in ranks),
        "max_relative_energy_difference": energy_difference,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json(args.out, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
