"""Memory budgets: how many images one network pass may hold, so that a call's peak memory does not grow with
the number of ensemble samples, candidates or frames (``docs/algorithm.md#memory``).

A network pass over ``B`` images of ``h x w`` pixels (after the ensemble transform) keeps every image's
normalised taps and the largest layer's activations; its peak grows as ``B * h * w * bytes_per_pixel``. The
per-pixel costs below were measured as the peak-memory growth per image of a no-grad pass (float32, 263x263
transformed pixels: VGG16 about 2000 bytes, SqueezeNet 1.1 about 430) and rounded up.
"""

from __future__ import annotations

import os

import torch

BYTES_PER_PIXEL_FLOAT32: dict[str, int] = {"vgg16": 2048, "squeezenet1_1": 512, "alexnet": 256, "none": 64}
"""Peak bytes one image adds to a no-grad network pass, per transformed pixel, in float32."""

DEFAULT_CPU_BUDGET = 2 * 1024**3
"""Default budget on the CPU: 2 GiB, or a quarter of the available memory if that is less."""

MIN_BUDGET = 64 * 1024**2


def available_cpu_memory() -> int | None:
    """Bytes of memory available to new allocations (``MemAvailable`` on Linux), or ``None`` if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def default_memory_budget(device: torch.device) -> int:
    """The budget used when none is given: half the free memory of a CUDA device; on the CPU (and MPS)
    :data:`DEFAULT_CPU_BUDGET` or a quarter of the available memory, whichever is less."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(MIN_BUDGET, free // 2)
    available = available_cpu_memory()
    if available is None:
        return DEFAULT_CPU_BUDGET
    return max(MIN_BUDGET, min(DEFAULT_CPU_BUDGET, available // 4))


def parse_memory_size(text: str) -> int:
    """``"512M"``, ``"2G"``, ``"1.5GiB"`` or a plain number of bytes -> bytes (``ValueError`` otherwise)."""
    cleaned = text.strip().upper().removesuffix("IB").removesuffix("B")
    factors = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    factor = factors.get(cleaned[-1:], 1)
    number = cleaned[:-1] if cleaned[-1:] in factors else cleaned
    try:
        value = float(number) * factor
    except ValueError:
        raise ValueError(f"memory size {text!r} is not a size like 512M, 2G or a number of bytes") from None
    if not value >= MIN_BUDGET:
        raise ValueError(f"memory size {text!r} is below the minimum of {MIN_BUDGET // 1024**2} MiB")
    return int(value)


def images_per_pass(budget: int, backbone: str, pixels: int, element_size: int = 4) -> int:
    """How many images of ``pixels`` transformed pixels one network pass may hold within ``budget`` bytes
    (at least 1: a single image over the budget is still evaluated)."""
    per_image = BYTES_PER_PIXEL_FLOAT32[backbone] * pixels * max(1, element_size // 4)
    return max(1, budget // per_image)
