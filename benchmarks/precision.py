"""Reduced precision and memory layout: bf16/fp16 autocast and channels-last, each timed
against float32 (forward + backward, paired) and checked for the relative error of its distances (< 1e-2).

Written for CUDA (``elpips bench --device cuda``); autocast also runs on CPU (bf16), which the tests use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from elpips import Metric

from .measurements import example_images, image_batch
from .timing import paired_ratio, paired_timings, summarize

MAX_RELATIVE_ERROR = 1e-2
MODES = ("bfloat16", "float16", "channels_last")


def _context(mode: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for the 16-bit modes, nothing for ``float32`` and ``channels_last``."""
    if mode in ("bfloat16", "float16"):
        return torch.autocast(device_type=device.type, dtype=getattr(torch, mode))
    return contextlib.nullcontext()


def layout_copy(metric: Metric, channels_last: bool) -> Metric:
    """A second metric with ``metric``'s weights that runs its network in the given memory layout."""
    twin = Metric(metric.name, backbone_weights="random", device=metric.device, ensemble=metric.ensemble,
                  channels_last=channels_last)
    twin.load_state_dict(metric.state_dict())
    return twin


def measure_precision(metric: Metric, size: int, batch: int, samples: int, repeats: int, warmup: int,
                      modes: tuple[str, ...] = MODES, tick: Callable[[], None] | None = None) -> dict:
    """Relative distance error vs float32 on ``samples`` fixed ensemble samples, and paired speed ratios.

    Returns ``{"modes": {mode: {"max_relative_error", "passes", "speedup_vs_float32"} or {"error"}}, ...}``.
    """
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise ValueError(f"unknown precision modes {unknown}; choose from {', '.join(MODES)}")
    device = metric.device
    cat, dog = example_images(size, device)
    x0, y = image_batch(cat, batch, seed=1), image_batch(dog, batch, seed=2)
    generator = torch.Generator().manual_seed(0)
    sample = metric.sample(samples * batch, size, size, generator)
    tiled_x, tiled_y = x0.repeat(samples, 1, 1, 1), y.repeat(samples, 1, 1, 1)
    # The float32 reference (and autocast) runs in the default layout, so that channels-last is compared with it
    # also where channels-last is the metric's own default (the CPU).
    models = {"float32": layout_copy(metric, channels_last=False)}
    if "channels_last" in modes:
        models["channels_last"] = layout_copy(metric, channels_last=True)

    def model_for(mode: str) -> Metric:
        return models.get(mode, models["float32"])

    def layout(images: torch.Tensor, mode: str) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if mode == "channels_last" else images

    @torch.no_grad()
    def distances(mode: str) -> torch.Tensor:
        model = model_for(mode)
        with _context(mode, device):
            features_x = model.features(layout(tiled_x, mode), sample)
            features_y = model.features(layout(tiled_y, mode), sample)
            return model.distance_between(features_x, features_y).float()

    reference = distances("float32")
    results: dict[str, dict] = {}
    sides: dict[str, Callable[[], None]] = {}

    def side(mode: str) -> Callable[[], None]:
        def run() -> None:
            x = layout(x0, mode).clone().requires_grad_(True)
            with _context(mode, device):
                model_for(mode)(x, y).sum().backward()
        return run

    for mode in modes:
        try:
            values = distances(mode)
            side(mode)()
        except (RuntimeError, TypeError) as error:  # a dtype or layout this device/build does not support
            results[mode] = {"error": str(error).splitlines()[0]}
            continue
        relative = ((values - reference).abs() / reference.abs().clamp_min(1e-12)).max().item()
        results[mode] = {"max_relative_error": relative, "passes": relative < MAX_RELATIVE_ERROR}
        sides[mode] = side(mode)
    if sides:
        times = paired_timings({"float32": side("float32"), **sides}, repeats, warmup, device, tick)
        for mode in sides:
            results[mode]["speedup_vs_float32"] = paired_ratio(times["float32"], times[mode])
        timings = {name: summarize(values) for name, values in times.items()}
    else:
        timings = {}
    return {"size": size, "batch": batch, "samples": samples, "repeats": repeats,
            "max_relative_error_allowed": MAX_RELATIVE_ERROR, "modes": results, "timings": timings}
