"""Where the time goes: a ``torch.profiler`` breakdown of E-LPIPS forward+backward vs bare VGG16 ``features``.

Self time of every operator, summed over a few steps, grouped into categories by operator name
(convolutions, ReLU, pooling, dropout masks, normalisation, transform gathers/padding, element-wise, ...).
The categories are approximate: an element-wise ``mul`` may be a dropout mask being applied or a colour scale.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterator

import torch
from torch.profiler import ProfilerActivity, profile

from .timing import sync

CATEGORIES: list[tuple[str, re.Pattern]] = [
    ("convolution", re.compile(r"conv|mkldnn|cudnn|gemm", re.I)),
    ("relu", re.compile(r"relu|threshold|clamp_min", re.I)),
    ("pooling", re.compile(r"pool", re.I)),
    ("dropout masks", re.compile(r"bernoulli|geometric|index_fill|uniform|random", re.I)),
    ("normalisation", re.compile(r"norm", re.I)),
    ("transform (gather, pad, index)", re.compile(r"gather|scatter|pad|reflection|index|flip|permute|transpose",
                                                  re.I)),
    ("distance (einsum, reductions)", re.compile(r"einsum|bmm|\bmm\b|aten::mm|sum|mean|dot", re.I)),
    ("element-wise", re.compile(r"mul|div|add|sub|pow|square|sqrt|where|neg|clamp|rsub|reciprocal", re.I)),
    ("memory (copy, fill, alloc)", re.compile(r"copy|fill|zero|empty|clone|contiguous|cat|stack|expand|repeat|"
                                              r"reshape|view|_to_copy|\bto\b", re.I)),
]


def category(name: str) -> str:
    """The category of an operator name (first match in :data:`CATEGORIES`, else ``"other"``)."""
    for label, pattern in CATEGORIES:
        if pattern.search(name):
            return label
    return "other"


def _self_time_us(event, device: torch.device) -> float:
    if device.type == "cuda":
        return float(getattr(event, "self_device_time_total", 0.0))
    return float(event.self_cpu_time_total)


@contextlib.contextmanager
def native_stderr_silenced(enabled: bool = True) -> Iterator[None]:
    """File descriptor 2 to /dev/null: the profiler's C++ library (Kineto) writes its start/stop lines and, on a
    machine without CUDA, a "gpuGetDeviceCount failed" error straight there, around Python's ``sys.stderr``."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profile_side(fn: Callable[[], object], steps: int, device: torch.device, top: int = 10) -> dict:
    """Profile ``steps`` calls of ``fn`` (after one warm-up call).

    Returns total self time (ms per step), category shares and the ``top`` operators by self time.
    """
    fn()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with native_stderr_silenced(device.type != "cuda"), profile(activities=activities) as prof:
        for _ in range(steps):
            fn()
        sync(device)
    rows = [(event.key, _self_time_us(event, device), int(event.count)) for event in prof.key_averages()]
    rows = [row for row in rows if row[1] > 0]
    total = sum(time for _, time, _ in rows) or 1.0
    shares: dict[str, float] = {}
    for name, time, _ in rows:
        shares[category(name)] = shares.get(category(name), 0.0) + time / total
    rows.sort(key=lambda row: row[1], reverse=True)
    return {
        "self_time_ms_per_step": total / 1000.0 / steps,
        "operator_calls_per_step": sum(count for _, _, count in rows) / steps,
        "categories": dict(sorted(shares.items(), key=lambda item: item[1], reverse=True)),
        "top_operators": [{"name": name, "share": time / total, "ms_per_step": time / 1000.0 / steps,
                           "calls_per_step": count / steps} for name, time, count in rows[:top]],
    }


def profile_single(metric, size: int, batch: int, steps: int) -> dict:
    """Profile E-LPIPS ``metric(x, y).sum().backward()`` and bare VGG16 ``features`` at the same size/batch."""
    from .measurements import example_images, image_batch, vgg_features_like

    device = metric.device
    cat, dog = example_images(size, device)
    x0, y = image_batch(cat, batch, seed=1), image_batch(dog, batch, seed=2)
    vgg = vgg_features_like(metric)

    def elpips_side() -> None:
        x = x0.clone().requires_grad_(True)
        metric(x, y).sum().backward()

    def vgg_side() -> None:
        x = x0.clone().requires_grad_(True)
        with torch.no_grad():
            vgg(y)
        vgg(x).sum().backward()

    elpips_profile = profile_side(elpips_side, steps, device)
    vgg_profile = profile_side(vgg_side, steps, device)
    return {"size": size, "batch": batch, "steps": steps, "elpips": elpips_profile, "vgg_features": vgg_profile,
            "self_time_ratio": elpips_profile["self_time_ms_per_step"] / vgg_profile["self_time_ms_per_step"]}
