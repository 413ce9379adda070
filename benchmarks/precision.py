"""Reduced precision and memory layout, through ``Metric(precision=...)``.

* :func:`measure_precision`: the relative error of each mode's distances against float32 on fixed ensemble
  samples (< 1e-2) and its paired speed-up; modes ``bfloat16``, ``float16`` (CUDA only: recorded as an error
  elsewhere) and ``channels_last``.
* :func:`measure_precision_speed`: the bench's precision section. E-LPIPS-VGG forward+backward per pair in every
  precision against the same float32 floor, torchvision-layout VGG16 ``features`` in channels-last memory format
  (the backbone without the metric), in one interleaved loop; and the shared barycenter and geodesic steps in
  every precision against their float32 selves.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from elpips import Metric

from .measurements import (
    Tick,
    _no_tick,
    barycenter_problem,
    example_images,
    geodesic_shared_step,
    image_batch,
    linear_path,
    vgg_features_like,
)
from .timing import paired_ratio, paired_timings, summarize

MAX_RELATIVE_ERROR = 1e-2
MODES = ("bfloat16", "float16", "channels_last")
FLOOR = "vgg_features_channels_last"
"""The side every precision's single call is divided by."""


def precision_copy(metric: Metric, precision: str = "float32", channels_last: bool | None = None) -> Metric:
    """A second metric with ``metric``'s weights, ensemble and seed-free generator, in ``precision`` and the given
    memory layout (``None``: the device's default). ``ValueError`` for a precision the device cannot run."""
    twin = Metric(metric.name, backbone_weights="random", device=metric.device, ensemble=metric.ensemble,
                  channels_last=channels_last, precision=precision)
    twin.load_state_dict(metric.state_dict())
    return twin


def layout_copy(metric: Metric, channels_last: bool) -> Metric:
    """A float32 copy of ``metric`` that runs its network in the given memory layout."""
    return precision_copy(metric, "float32", channels_last)


def device_precisions(device: torch.device) -> tuple[str, ...]:
    """The precisions the bench times on ``device``: float32 and bfloat16, and float16 on CUDA."""
    return ("float32", "bfloat16", "float16") if device.type == "cuda" else ("float32", "bfloat16")


def measure_precision(metric: Metric, size: int, batch: int, samples: int, repeats: int, warmup: int,
                      modes: tuple[str, ...] = MODES, tick: Callable[[], None] | None = None) -> dict:
    """Relative distance error vs float32 on ``samples`` fixed ensemble samples, and paired speed ratios.

    The float32 reference runs in the default (contiguous) layout, so that ``channels_last`` is compared with it
    also where channels-last is the metric's own default (the CPU); the 16-bit modes run in the same layout.
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
    models = {"float32": layout_copy(metric, channels_last=False)}
    results: dict[str, dict] = {}
    for mode in modes:
        try:
            models[mode] = (layout_copy(metric, channels_last=True) if mode == "channels_last"
                            else precision_copy(metric, mode, channels_last=False))
        except ValueError as error:  # float16 off CUDA
            results[mode] = {"error": str(error).splitlines()[0]}

    def layout(images: torch.Tensor, mode: str) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if mode == "channels_last" else images

    @torch.no_grad()
    def distances(mode: str) -> torch.Tensor:
        model = models[mode]
        features_x = model.features(layout(tiled_x, mode), sample)
        features_y = model.features(layout(tiled_y, mode), sample)
        return model.distance_between(features_x, features_y).float()

    def side(mode: str) -> Callable[[], None]:
        def run() -> None:
            x = layout(x0, mode).clone().requires_grad_(True)
            models[mode](x, y).sum().backward()
        return run

    reference = distances("float32")
    sides: dict[str, Callable[[], None]] = {}
    for mode in modes:
        if mode in results:
            continue
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


def _barycenter_step(metric: Metric, size: int, references: int, samples: int) -> Callable[[], None]:
    """One shared barycenter gradient step over the cat-to-dog cross-fades (as in the bench's barycenter)."""
    from elpips.barycenters import draw_sample, shared_step

    refs, x0, coefficients = barycenter_problem(size, references, metric.device)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        x = x0.clone().requires_grad_(True)
        sample = draw_sample(metric, samples, size, size, generator)
        shared_step(metric, x, refs, coefficients, 2.0, sample, samples, chunk_size=16)

    return step


def measure_precision_speed(metric: Metric, size: int, solver_size: int, batch: int, references: int, frames: int,
                            chunk_size: int | None, repeats: int, warmup: int,
                            precisions: tuple[str, ...] | None = None, tick: Tick = _no_tick) -> dict:
    """Paired speed of every precision (default :func:`device_precisions`), in three interleaved loops.

    Single call: ``elpips_<p>`` (E-LPIPS-VGG ``metric(x, y).sum().backward()``, ``batch`` pairs, the device's
    default layout) and the floor :data:`FLOOR`; ratios ``elpips_<p>_vs_vgg_features_channels_last`` and
    ``<p>_vs_float32``. Barycenter (``references`` images) and geodesic (``frames`` segments) shared steps at
    ``solver_size``: ratios ``barycenter_<p>_vs_float32`` and ``geodesic_<p>_vs_float32`` (time ratios: below 1
    is faster). A precision the device cannot run is listed under ``skipped``.
    """
    device = metric.device
    precisions = device_precisions(device) if precisions is None else precisions
    if "float32" not in precisions:
        precisions = ("float32", *precisions)
    models: dict[str, Metric] = {}
    skipped: dict[str, str] = {}
    for precision in precisions:
        try:
            models[precision] = precision_copy(metric, precision)
        except ValueError as error:
            skipped[precision] = str(error)
    cat, dog = example_images(size, device)
    x0, y = image_batch(cat, batch, seed=1), image_batch(dog, batch, seed=2)
    vgg = vgg_features_like(metric).to(memory_format=torch.channels_last)
    x0_cl, y_cl = (image.contiguous(memory_format=torch.channels_last) for image in (x0, y))

    def elpips_side(model: Metric) -> Callable[[], None]:
        def run() -> None:
            x = x0.clone().requires_grad_(True)
            model(x, y).sum().backward()
        return run

    def floor() -> None:
        x = x0_cl.clone().requires_grad_(True)
        with torch.no_grad():
            vgg(y_cl)
        vgg(x).sum().backward()

    single_sides = {f"elpips_{name}": elpips_side(model) for name, model in models.items()}
    single_times = paired_timings({**single_sides, FLOOR: floor}, repeats, warmup, device, tick)
    ratios = {}
    for name in models:
        ratios[f"elpips_{name}_vs_{FLOOR}"] = paired_ratio(single_times[f"elpips_{name}"], single_times[FLOOR])
        if name != "float32":
            ratios[f"{name}_vs_float32"] = paired_ratio(single_times[f"elpips_{name}"], single_times["elpips_float32"])
    path = linear_path(solver_size, frames, device)
    solver_times = {}
    for solver, make in (("barycenter", lambda m: _barycenter_step(m, solver_size, references, batch)),
                         ("geodesic", lambda m: geodesic_shared_step(m, path, batch, chunk_size,
                                                                     torch.Generator().manual_seed(0)))):
        times = paired_timings({name: make(model) for name, model in models.items()}, repeats, warmup, device, tick)
        for name in models:
            if name != "float32":
                ratios[f"{solver}_{name}_vs_float32"] = paired_ratio(times[name], times["float32"])
        solver_times[solver] = {name: summarize(values) for name, values in times.items()}
    return {"size": size, "solver_size": solver_size, "batch": batch, "references": references, "frames": frames,
            "repeats": repeats, "precisions": list(models), "skipped": skipped, "ratios": ratios,
            "timings": {"single": {name: summarize(values) for name, values in single_times.items()},
                        **solver_times}}
