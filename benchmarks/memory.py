"""Peak-memory helpers of every benchmark: the peak resident-set growth of one step (CPU, Linux) and the peak
allocated CUDA memory.

CPU: measure in a fresh interpreter (configurations must not inherit each other's allocator caches) started with
:data:`MALLOC_ENV`, which makes glibc ``mmap`` every block above 64 KiB so that freed tensors leave the resident
set at once. :func:`peak_rss_step` runs one warm-up call, resets the kernel's peak-RSS mark
(``/proc/self/clear_refs``), runs the measured call and reports ``VmHWM - VmRSS``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from .timing import sync

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
"""Environment of a measuring child process (see the module docstring)."""


def status_kib(field: str) -> int | None:
    """A ``kB`` field (``VmRSS``, ``VmHWM``) of ``/proc/self/status``; ``None`` where unavailable."""
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0); ``False`` if impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_step(step: Callable[[], object], warmup: bool = True) -> dict:
    """Peak RSS increase (MiB) of one call of ``step`` in this process, after a warm-up call.

    Returns ``{"rss_before_mib", "rss_peak_mib", "step_peak_mib"}`` or ``{"error": ...}`` where the kernel offers
    no peak mark.
    """
    if warmup:
        step()  # one-time allocations (kernel caches, lazily built state) do not count
    before = status_kib("VmRSS")
    if before is None or not reset_peak_rss():
        return {"error": "peak RSS is not measurable here (needs Linux /proc/self/clear_refs)"}
    step()
    peak = status_kib("VmHWM")
    return {"rss_before_mib": before / 1024, "rss_peak_mib": peak / 1024, "step_peak_mib": (peak - before) / 1024}


def peak_cuda_step(step: Callable[[], object], device: torch.device | str) -> dict:
    """Peak allocated CUDA memory (MiB) of one call of ``step`` above the memory allocated before it."""
    step()
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    sync(device)
    peak = torch.cuda.max_memory_allocated(device)
    return {"allocated_before_mib": before / 2**20, "allocated_peak_mib": peak / 2**20,
            "step_peak_mib": (peak - before) / 2**20}
