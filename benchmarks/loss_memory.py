"""Peak memory and time of one loss step (forward + backward) with and without ``checkpoint_activations``.

    python -m elpips.benchmarks.loss_memory [--size 256] [--batch 1] [--metrics elpips-vgg lpips-vgg] [--repeats 3]

Writes ``outputs/benchmarks/loss_memory.json`` (atomically) and prints a table. CPU only. Every configuration
runs in a fresh interpreter (one torch thread unless ``--threads``) so configurations do not share allocator
caches. Two numbers per configuration:

* ``saved_mib``: bytes of the tensors autograd keeps for the backward pass after the forward pass (counted with
  ``torch.autograd.graph.saved_tensors_hooks``, each storage once): exact and allocator-independent.
* ``step_peak_mib``: the peak resident-set growth of a forward + backward step above the RSS before it, after a
  warm-up step (:func:`elpips.benchmarks.memory.peak_rss_step`). Linux only.

The backbone is the seeded random VGG (``backbone_weights="random"``): memory and time do not depend on the
weights' values, so the numbers hold for the ImageNet weights too. E-LPIPS runs with ``scale_levels=1``: every
sample is at full resolution (the ensemble's largest scale level, its worst case), so the numbers do not depend
on which scale level a seeded draw happens to fall on.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from .memory import measure_in_child, peak_rss_step
from .timing import time_once


def measure(metric_name: str, size: int, batch: int, checkpointing: bool, repeats: int) -> dict:
    """One configuration, in this process."""
    import elpips
    import torch

    metric = elpips.Metric(metric_name, backbone_weights="random", device="cpu", seed=0, reduction="mean",
                           checkpoint_activations=checkpointing, scale_levels=1)
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(batch, 3, size, size, generator=generator)
    output = torch.rand(batch, 3, size, size, generator=generator)

    def step() -> float:
        x = output.clone().requires_grad_(True)  # stands for a model's output
        loss = metric(x, clean)
        loss.backward()
        return float(loss)

    step()  # warm-up
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    x = output.clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = metric(x, clean)
    saved = sum(storages.values()) - x.untyped_storage().nbytes() * (x.untyped_storage().data_ptr() in storages)
    loss.backward()
    del loss, x
    times = [time_once(step, "cpu") for _ in range(repeats)]
    peak = peak_rss_step(step, warmup=False)
    return {"metric": metric_name, "size": size, "batch": batch, "checkpoint_activations": checkpointing,
            "saved_mib": saved / 2**20, "step_peak_mib": peak["step_peak_mib"],
            "step_seconds_median": statistics.median(times), "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--metrics", nargs="+", default=["elpips-vgg", "lpips-vgg"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="outputs/benchmarks/loss_memory.json")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # METRIC,CHECKPOINTING: child process
    args = parser.parse_args(argv)
    if args.one is not None:
        import torch

        torch.set_num_threads(args.threads)
        name, flag = args.one.split(",")
        print(json.dumps(measure(name, args.size, args.batch, flag == "1", args.repeats)))
        return 0
    rows = []
    for name in args.metrics:
        for flag in ("0", "1"):
            command = [sys.executable, "-m", "elpips.benchmarks.loss_memory", "--one", f"{name},{flag}",
                       "--size", str(args.size), "--batch", str(args.batch), "--repeats", str(args.repeats),
                       "--threads", str(args.threads)]
            rows.append(measure_in_child(command, {"OMP_NUM_THREADS": str(args.threads)}, check=True))
            row = rows[-1]
            print(f"{name:12s} {args.size}x{args.size} batch {args.batch} "
                  f"checkpoint={row['checkpoint_activations']!s:5s}"
                  f"  saved {row['saved_mib']:7.1f} MiB  step peak {row['step_peak_mib']:7.1f} MiB"
                  f"  step {row['step_seconds_median']:.2f} s")
    for name in args.metrics:
        plain, checkpointed = [r for r in rows if r["metric"] == name]
        print(f"{name}: checkpointing keeps {checkpointed['saved_mib'] / plain['saved_mib']:.0%} of the saved "
              f"activations, peak {checkpointed['step_peak_mib'] / plain['step_peak_mib']:.0%}, time "
              f"x{checkpointed['step_seconds_median'] / plain['step_seconds_median']:.2f}")
    from elpips.io import write_json

    write_json(args.out, {"benchmark": "loss step memory (forward + backward), CPU",
                          "backbone": "random (memory and time do not depend on the weights' values)",
                          "rows": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
