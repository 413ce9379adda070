"""Peak memory of one shared geodesic step, with and without chunking.

CPU: every configuration runs in a fresh Python process (``python -m elpips.benchmarks.step_memory ...``) that
measures one step with :func:`elpips.benchmarks.memory.peak_rss_step`, so configurations cannot inherit each
other's allocator caches. CUDA: in-process, :func:`elpips.benchmarks.memory.peak_cuda_step`.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from .memory import measure_in_child, peak_cuda_step, peak_rss_step


def _one_step(size: int, frames: int, samples: int, chunk_size: int | None, device: str):
    """Build the metric and path; return a callable doing one shared geodesic step."""
    from .measurements import geodesic_shared_step, linear_path, timing_metric

    metric = timing_metric(device)
    path = linear_path(size, frames, metric.device)
    return geodesic_shared_step(metric, path, samples, chunk_size, torch.Generator().manual_seed(0))


def measure_in_process_cpu(size: int, frames: int, samples: int, chunk_size: int | None) -> dict:
    """Peak RSS increase (MiB) of one step in *this* process (meant for a fresh one: see module docstring)."""
    return peak_rss_step(_one_step(size, frames, samples, chunk_size, "cpu"))


def measure_cuda(size: int, frames: int, samples: int, chunk_size: int | None, device: str) -> dict:
    """Peak allocated CUDA memory (MiB) of one step above the memory allocated before it."""
    return peak_cuda_step(_one_step(size, frames, samples, chunk_size, device), device)


def measure_subprocess(size: int, frames: int, samples: int, chunk_size: int | None, timeout: float = 600) -> dict:
    """Run :func:`measure_in_process_cpu` in a fresh interpreter with the same thread count."""
    command = [sys.executable, "-m", "elpips.benchmarks.step_memory", "--size", str(size), "--frames", str(frames),
               "--samples", str(samples), "--threads", str(torch.get_num_threads())]
    if chunk_size is not None:
        command += ["--chunk-size", str(chunk_size)]
    return measure_in_child(command, timeout=timeout)


def measure_memory(size: int, frames_list: list[int], samples: int, chunk_size: int, device: torch.device,
                   tick=None) -> dict:
    """Peak step memory for every ``K`` in ``frames_list``, unchunked (one chunk) and with ``chunk_size``."""
    from .measurements import geodesic_implementation

    rows = []
    chunkable = geodesic_implementation() != "inline"
    for frames in frames_list:
        for chunk in (None, chunk_size) if chunkable else (None,):
            if device.type == "cuda":
                result = measure_cuda(size, frames, samples, chunk, str(device))
            else:
                result = measure_subprocess(size, frames, samples, chunk)
            rows.append({"frames": frames, "chunk_size": chunk if chunk is not None else "none", **result})
            if tick is not None:
                tick()
    method = ("torch.cuda.max_memory_allocated" if device.type == "cuda"
              else "peak RSS (VmHWM - VmRSS) of one step in a fresh process")
    note = None if chunkable else "chunking is not measurable yet: elpips.geodesics.path_step is not available"
    return {"size": size, "samples": samples, "method": method, "rows": rows, "note": note}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="peak RSS of one shared geodesic step (one configuration)")
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--frames", type=int, required=True)
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Child-process entry point: print one JSON line with the measurement."""
    args = _parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(measure_in_process_cpu(args.size, args.frames, args.samples, args.chunk_size)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
