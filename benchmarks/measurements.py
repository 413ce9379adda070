"""The benchmark measurements: each function times two or more ways of doing the
same work, interleaved in one loop, and returns a JSON-ready dict with raw timings, medians and ratios.

Definitions (also written into every report):

* **single**: one batch of ``B`` images ``x`` (requiring grad) against fixed targets ``y``.
  E-LPIPS: ``metric(x, y).sum().backward()`` with ``n = 1`` (one ensemble sample per image). VGG: torchvision's
  VGG16 ``features`` stack with the same frozen weights, forward + backward on ``x`` and a no-grad forward on
  ``y``, at ``H x W`` and at ``(H+7) x (W+7)`` (E-LPIPS's offset padding). LPIPS: the ``lpips`` package's
  LPIPS-VGG (same backbone weights) ``peer(x, y, normalize=True).sum().backward()``.
* **barycenter**: the gradient of ``sum_i d(x, r_i)^2 / N`` over ``N`` references.
  Shared: :func:`elpips.barycenters.shared_step` (``x``'s features once, references without a graph, one
  backward). Naive: ``N`` calls ``metric(x, r_i, n=S)`` each with its own backward (2N forward, N backward).
* **geodesic**: the gradient of ``sum_k d(x_k, x_{k+1})^2`` over a path of ``K+1`` frames (``K - 1``
  free). Shared: :func:`elpips.geodesics.path_step` (every frame once under one sample). Naive: ``K`` calls
  ``metric(x_k, x_{k+1}, n=S)`` each with its own backward (2K forward).
* **variance**: the distance estimate from one stratified batch of ``n`` samples
  (``metric.sample_distances(x, y, n).mean()``) vs the mean of ``n`` independent single-sample calls.

Timing metrics use ``scale_levels=1`` (every sample at full resolution) so that a random scale level does not
make one side cheaper by luck; the variance measurement uses the metric's default scales.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F
from elpips import Metric
from elpips.ensemble import DEFAULT_MAX_OFFSET
from elpips.io import load_image
from torch import nn

from .timing import paired_ratio, paired_timings, summarize

Tick = Callable[[], None]


def _no_tick() -> None:
    return None


# -- inputs and models -------------------------------------------------------------------------------------------
def centre_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The centred ``size x size`` window of ``[..., H, W]`` images (a view)."""
    height, width = images.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return images[..., top:top + size, left:left + size]


def example_image(name: str, size: int) -> torch.Tensor:
    """Shipped example ``name``, centre-cropped to a square and resized to ``size x size`` (antialiased bilinear,
    clamped to [0, 1]): ``[1, 3, S, S]``. Every benchmark's resized input comes from here."""
    image = load_image(f"example:{name}")
    square = centre_crop(image, min(image.shape[-2:]))
    resized = F.interpolate(square, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized.clamp(0, 1)


def example_images(size: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """The shipped cat and dog as :func:`example_image`: two ``[1,3,S,S]`` on ``device``."""
    return example_image("cat", size).to(device), example_image("dog", size).to(device)


def image_batch(image: torch.Tensor, batch: int, seed: int) -> torch.Tensor:
    """``batch`` slightly different copies of ``image`` ``[1,3,H,W]`` (seeded +-2% noise, clamped to [0, 1])."""
    generator = torch.Generator().manual_seed(seed)
    noise = (torch.rand(batch, *image.shape[1:], generator=generator) - 0.5) * 0.04
    return (image + noise.to(image.device)).clamp(0, 1)


def timing_metric(device: torch.device | str, scale_levels: int | None = 1, seed: int = 0) -> Metric:
    """E-LPIPS-VGG on the seeded random backbone (timings do not depend on weight values)."""
    return Metric("elpips-vgg", backbone_weights="random", device=device, seed=seed, scale_levels=scale_levels)


def vgg_features_like(metric: Metric) -> nn.Sequential:
    """torchvision's bare VGG16 ``features`` (max pooling, ReLU in place), with ``metric``'s frozen weights."""
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["D"], batch_norm=False)
    state = {key.split(".", 1)[1]: value for key, value in metric.backbone.state_dict().items()}
    features.load_state_dict(state, strict=True)
    return features.to(metric.device).eval().requires_grad_(False)


_LPIPS_VGG_SLICES = [(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)]


def lpips_peer_like(metric: Metric) -> nn.Module:
    """The ``lpips`` package's LPIPS-VGG with ``metric``'s backbone weights, frozen, on ``metric``'s device."""
    import warnings

    import lpips

    with warnings.catch_warnings():  # lpips passes torchvision's deprecated ``pretrained=``
        warnings.simplefilter("ignore", UserWarning)
        peer = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False)
    state = {}
    for key, value in metric.backbone.state_dict().items():
        _, index, rest = key.split(".", 2)
        number = next(n for n, (low, high) in enumerate(_LPIPS_VGG_SLICES) if low <= int(index) < high)
        state[f"slice{number + 1}.{index}.{rest}"] = value
    peer.net.load_state_dict(state, strict=True)
    return peer.to(metric.device).eval().requires_grad_(False)


def _with_ratios(times: dict[str, list[float]], ratios: dict[str, tuple[str, str]]) -> dict:
    """``{"timings": {side: summary}, "ratios": {name: median paired ratio}}``."""
    return {
        "timings": {name: summarize(values) for name, values in times.items()},
        "ratios": {name: paired_ratio(times[a], times[b]) for name, (a, b) in ratios.items()},
    }


# -- single calls ------------------------------------------------------------------------------------------------
def measure_single(metric: Metric, size: int, batch: int, repeats: int, warmup: int, tick: Tick = _no_tick) -> dict:
    """E-LPIPS forward+backward vs bare VGG16 ``features`` (at ``H x W`` and padded) vs ``lpips`` LPIPS-VGG."""
    device = metric.device
    cat, dog = example_images(size, device)
    x0, y = image_batch(cat, batch, seed=1), image_batch(dog, batch, seed=2)
    y_padded = F.pad(y, (0, DEFAULT_MAX_OFFSET, 0, DEFAULT_MAX_OFFSET), mode="reflect")
    x0_padded = F.pad(x0, (0, DEFAULT_MAX_OFFSET, 0, DEFAULT_MAX_OFFSET), mode="reflect")
    vgg = vgg_features_like(metric)
    peer = lpips_peer_like(metric)

    def elpips_side() -> None:
        x = x0.clone().requires_grad_(True)
        metric(x, y).sum().backward()

    vgg_channels_last = vgg_features_like(metric).to(memory_format=torch.channels_last)

    def vgg_side(source: torch.Tensor, target: torch.Tensor, network: nn.Module = vgg) -> Callable[[], None]:
        def run() -> None:
            x = source.clone().requires_grad_(True)
            with torch.no_grad():
                network(target)
            network(x).sum().backward()
        return run

    def lpips_side() -> None:
        x = x0.clone().requires_grad_(True)
        peer(x, y, normalize=True).sum().backward()

    sides = {"elpips": elpips_side, "vgg_features": vgg_side(x0, y),
             "vgg_features_padded": vgg_side(x0_padded, y_padded),
             "vgg_features_channels_last": vgg_side(x0.contiguous(memory_format=torch.channels_last),
                                                    y.contiguous(memory_format=torch.channels_last),
                                                    vgg_channels_last),
             "lpips": lpips_side}
    times = paired_timings(sides, repeats, warmup, device, tick)
    result = _with_ratios(times, {
        "elpips_vs_vgg_features": ("elpips", "vgg_features"),
        "elpips_vs_vgg_features_padded": ("elpips", "vgg_features_padded"),
        "elpips_vs_vgg_features_channels_last": ("elpips", "vgg_features_channels_last"),
        "elpips_vs_lpips": ("elpips", "lpips"),
    })
    result.update(size=size, batch=batch, repeats=repeats,
                  per_image_sample_s={name: summary["median_s"] / batch
                                      for name, summary in result["timings"].items()})
    return result


# -- barycenter step ---------------------------------------------------------------------------------------------
def barycenter_problem(size: int, references: int,
                       device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The benchmarks' barycenter step inputs: ``references`` cat-to-dog cross-fades ``[R, 3, size, size]``, their
    mean as the iterate ``[1, 3, size, size]`` and equal coefficients ``[R]``."""
    cat, dog = example_images(size, device)
    weights = torch.linspace(0, 1, references, device=device)[:, None, None, None]
    refs = (1 - weights) * cat + weights * dog
    return refs, refs.mean(dim=0, keepdim=True), torch.full((references,), 1.0 / references, device=device)


def measure_barycenter(metric: Metric, size: int, references: int, samples: int, repeats: int, warmup: int,
                       tick: Tick = _no_tick) -> dict:
    """One barycenter gradient step over ``references`` images: shared features vs per-pair calls."""
    from elpips.barycenters import draw_sample, shared_step

    device = metric.device
    refs, x0, coefficients = barycenter_problem(size, references, device)
    generator = torch.Generator().manual_seed(0)
    height, width = size, size

    def shared() -> None:
        x = x0.clone().requires_grad_(True)
        sample = draw_sample(metric, samples, height, width, generator)
        shared_step(metric, x, refs, coefficients, 2.0, sample, samples, chunk_size=16)

    def naive() -> None:
        x = x0.clone().requires_grad_(True)
        for index in range(references):
            distance = metric(x, refs[index:index + 1], n=samples)
            (coefficients[index] * distance.pow(2)).sum().backward()

    times = paired_timings({"shared": shared, "naive": naive}, repeats, warmup, device, tick)
    result = _with_ratios(times, {"barycenter_speedup": ("naive", "shared")})
    result.update(size=size, references=references, samples=samples, repeats=repeats,
                  passes={"shared": f"{references + 1} forward, 1 backward",
                          "naive": f"{2 * references} forward, {references} backward"})
    return result


# -- geodesic step -----------------------------------------------------------------------------------------------
def linear_path(size: int, frames: int, device: torch.device | str) -> torch.Tensor:
    """``[K+1, 3, S, S]``: the cross-fade from the cat to the dog in ``K = frames`` steps."""
    cat, dog = example_images(size, device)
    t = torch.linspace(0, 1, frames + 1, device=device)[:, None, None, None]
    return (1 - t) * cat + t * dog


def geodesic_implementation() -> str:
    """``"elpips.geodesics.path_step"`` when the geodesic package offers it, else ``"inline"``."""
    try:
        from elpips.geodesics import path_step  # noqa: F401
    except ImportError:
        return "inline"
    return "elpips.geodesics.path_step"


def _inline_path_step(metric: Metric, path: torch.Tensor, variable: torch.Tensor, sample, samples: int) -> None:
    """Shared path energy without chunking: endpoints without a graph, all interior frames as groups."""
    with torch.no_grad():
        ends = metric.features(path[[0, -1]].unsqueeze(1).expand(-1, samples, -1, -1, -1), sample)
    inner = metric.features(variable.unsqueeze(1).expand(-1, samples, -1, -1, -1), sample)
    sequence = [torch.cat([end[:1], tap, end[1:]]) for end, tap in zip(ends, inner, strict=False)]
    distances = metric.distance_between([tap[:-1] for tap in sequence], [tap[1:] for tap in sequence])
    distances.square().mean(dim=1).sum().backward()


def geodesic_shared_step(metric: Metric, path: torch.Tensor, samples: int, chunk_size: int | None,
                         generator: torch.Generator) -> Callable[[], None]:
    """A callable doing one shared-feature path-energy gradient step (``chunk_size=None``: one chunk)."""
    frames = path.shape[0] - 1
    free = torch.zeros(frames + 1, dtype=torch.bool)
    free[1:-1] = True
    height, width = path.shape[-2:]
    use_package = geodesic_implementation() != "inline"

    def step() -> None:
        variable = path[1:-1].clone().requires_grad_(True)
        sample = metric.sample(samples, height, width, generator)
        if use_package:
            from elpips.geodesics import path_step

            path_step(metric, path, free, variable, sample, samples=samples, chunk_size=chunk_size or frames)
        else:
            _inline_path_step(metric, path, variable, sample, samples)

    return step


def geodesic_naive_step(metric: Metric, path: torch.Tensor, samples: int) -> Callable[[], None]:
    """A callable doing the naive step: every adjacent pair its own ``metric`` call and backward."""
    frames = path.shape[0] - 1

    def step() -> None:
        variable = path[1:-1].clone().requires_grad_(True)

        def frame(k: int) -> torch.Tensor:
            return variable[k - 1:k] if 0 < k < frames else path[k:k + 1]

        for k in range(frames):
            metric(frame(k), frame(k + 1), n=samples).pow(2).sum().backward()

    return step


def measure_geodesic(metric: Metric, size: int, frames: int, samples: int, chunk_size: int | None, repeats: int,
                     warmup: int, tick: Tick = _no_tick) -> dict:
    """One path-energy gradient step over ``K = frames`` segments: shared features vs per-pair calls."""
    path = linear_path(size, frames, metric.device)
    generator = torch.Generator().manual_seed(0)
    sides = {"shared": geodesic_shared_step(metric, path, samples, chunk_size, generator),
             "naive": geodesic_naive_step(metric, path, samples)}
    times = paired_timings(sides, repeats, warmup, metric.device, tick)
    result = _with_ratios(times, {"geodesic_speedup": ("naive", "shared")})
    result.update(size=size, frames=frames, samples=samples, chunk_size=chunk_size, repeats=repeats,
                  implementation=geodesic_implementation())
    return result


def measure_geodesic_scaling(metric: Metric, configurations: list[tuple[int, int]], samples: int,
                             chunk_size: int | None, repeats: int, warmup: int, tick: Tick = _no_tick) -> dict:
    """Time per shared geodesic step for each ``(size, frames)``, all configurations in one round-robin loop."""
    generator = torch.Generator().manual_seed(0)
    sides = {f"{size}px_K{frames}": geodesic_shared_step(metric, linear_path(size, frames, metric.device),
                                                         samples, chunk_size, generator)
             for size, frames in configurations}
    times = paired_timings(sides, repeats, warmup, metric.device, tick)
    rows = []
    for (size, frames), values in zip(configurations, times.values(), strict=False):
        median = statistics.median(values)
        rows.append({"size": size, "frames": frames, "median_s": median, "per_frame_s": median / frames,
                     "times_s": [round(t, 6) for t in values]})
    return {"samples": samples, "chunk_size": chunk_size, "repeats": repeats, "rows": rows,
            "implementation": geodesic_implementation()}


# -- sampling variance -------------------------------------------------------------------------------------------
def _variance_ratio_interval(std_a: float, std_b: float, trials: int) -> list[float] | None:
    """95% interval of ``var_a / var_b`` from two samples of ``trials`` values each (F distribution)."""
    if trials < 3 or std_b <= 0:
        return None
    from scipy.stats import f

    ratio = std_a**2 / std_b**2
    degrees = trials - 1
    return [ratio / f.ppf(0.975, degrees, degrees), ratio / f.ppf(0.025, degrees, degrees)]


def measure_variance(metric: Metric, size: int, n: int, trials: int, warmup: int, tick: Tick = _no_tick) -> dict:
    """Spread of the ``n``-sample estimate of d(cat, dog): one stratified batch vs ``n`` independent draws.

    ``efficiency_gain = (var_independent * time_independent) / (var_stratified * time_stratified)``: how much
    more variance reduction per second stratified batches buy (> 1: stratification wins).
    """
    x, y = example_images(size, metric.device)
    estimates: dict[str, list[float]] = {"stratified": [], "independent": []}
    singles: list[float] = []

    @torch.no_grad()
    def stratified() -> None:
        estimates["stratified"].append(float(metric.sample_distances(x, y, n).mean()))

    @torch.no_grad()
    def independent() -> None:
        draws = [float(metric.sample_distances(x, y, 1)) for _ in range(n)]
        singles.extend(draws)
        estimates["independent"].append(sum(draws) / n)

    times = paired_timings({"stratified": stratified, "independent": independent}, trials, warmup,
                           metric.device, tick)
    kept = {name: values[-trials:] for name, values in estimates.items()}
    std = {name: statistics.stdev(values) for name, values in kept.items()}
    seconds = {name: statistics.median(values) for name, values in times.items()}
    single_std = statistics.stdev(singles[-trials * n:])
    gain = (std["independent"] ** 2 * seconds["independent"]) / max(std["stratified"] ** 2 * seconds["stratified"],
                                                                     1e-30)
    return {
        "size": size, "n": n, "trials": trials, "scale_levels": metric.scale_levels or "default",
        "mean_distance": statistics.fmean(kept["stratified"] + kept["independent"]),
        "std_stratified": std["stratified"], "std_independent": std["independent"],
        "std_single_sample": single_std, "std_independent_expected": single_std / n ** 0.5,
        "time_stratified_s": seconds["stratified"], "time_independent_s": seconds["independent"],
        "variance_ratio": std["independent"] ** 2 / max(std["stratified"] ** 2, 1e-30),
        "variance_ratio_ci95": _variance_ratio_interval(std["independent"], std["stratified"], trials),
        "time_ratio": seconds["independent"] / seconds["stratified"],
        "efficiency_gain": gain,
        "timings": {name: summarize(values) for name, values in times.items()},
    }
