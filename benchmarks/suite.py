"""The benchmark suite's plan (sizes, repeats) and its run: every section in order, one JSON-ready record.

``make_plan`` checks the options and fills in the default or ``--quick`` sizes; ``run_suite`` measures;
``write_results`` writes ``<out>/<timestamp>.json`` and ``.md`` atomically.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from elpips import resolve_device
from elpips.io import write_json, write_text

from . import measurements as benchmarks
from .crop import measure_crop_mode
from .environment import environment, load_average
from .op_profile import profile_single
from .precision import FLOOR, measure_precision, measure_precision_speed
from .report import render_markdown
from .spatial import measure_spatial, measure_spatial_memory
from .step_memory import measure_memory
from .timing import Stopwatch

SCHEMA = "elpips-bench/1"
MIN_SIZE = 32
"""torchvision's VGG16 `features` (the single-call baseline) pools 5 times: smaller images vanish."""
GOALS: dict[str, tuple[str, float]] = {
    "elpips_vs_vgg_features": ("<=", 1.15),
    "elpips_vs_lpips": ("<=", 1.3),
    "barycenter_speedup": (">=", 1.8),
    "geodesic_speedup": (">=", 1.8),
    f"elpips_bfloat16_vs_{FLOOR}": ("<=", 0.70),
    f"elpips_float32_vs_{FLOOR}": ("<=", 1.15),
}
"""Goals of the headline ratios (what the metric and the solvers should cost, relative to the baselines)."""
GOAL_CONDITIONS: dict[str, dict] = {
    f"elpips_bfloat16_vs_{FLOOR}": {"size": 128, "threads": 1},
    f"elpips_float32_vs_{FLOOR}": {"size": 128, "threads": 1},
}
"""Where a goal is stated for one configuration only: the plan values it holds at. Elsewhere the goal's
``applies`` is false and its ``met`` only indicative."""


@dataclass
class BenchPlan:
    """What one run measures. Sizes are square image sides in pixels.

    ``batch`` is the number of images per call in the single-call comparison and the number of ensemble samples
    per step in the solver steps; ``repeats`` timed rounds follow ``warmup`` untimed ones in every comparison
    (``single_repeats``, three times as many, in the cheap single-call comparison).
    ``threads``: torch's intra-op threads for the run (``None``: leave torch's default). :func:`make_plan` makes
    it 1 on the CPU: on a shared machine, threads of one operator wait for each other whenever another process
    holds a core, which slows the many small operators of E-LPIPS far more than large convolutions (measured on
    2 loaded cores: E-LPIPS/VGG 1.65-2.64 with 2 threads, 1.39-1.54 with 1; runs 3-5x longer).
    """

    quick: bool = False
    device: str = "cpu"
    threads: int | None = None
    size: int = 128
    solver_size: int = 64
    batch: int = 1
    repeats: int = 5
    single_repeats: int = 15
    warmup: int = 1
    references: int = 10
    geodesic_frames: tuple[int, ...] = (8, 16)
    chunk_size: int = 8
    scaling_frames: tuple[int, ...] = (4, 8, 16)
    scaling_sizes: tuple[int, ...] = (64, 128, 256)
    scaling_frames_at_sizes: int = 8
    scaling_repeats: int = 3
    memory_frames: tuple[int, ...] = (4, 8, 16)
    memory_chunk_size: int = 2
    variance_size: int = 64
    variance_samples: int = 8
    variance_trials: int = 24
    precision_samples: int = 4
    precision_frames: int = 8
    profile_steps: int = 2
    spatial_samples: int = 8
    spatial_memory_size: int | None = 256
    crop_size: int = 64
    crop_pairs: int = 3
    crop_samples: int = 128


def make_plan(quick: bool = False, device: str | None = None, size: int | None = None, batch: int | None = None,
              repeats: int | None = None, threads: int | None = None) -> BenchPlan:
    """The default (or ``quick``) plan with the command-line overrides; ``ValueError`` for bad values.

    ``threads``: ``None`` -> 1 on the CPU, torch's default elsewhere; ``0`` -> torch's default.

    ``size`` sets every size of the run (single calls, solver steps, memory, variance) except the resolution
    sweep, which always covers its listed sizes.
    """
    if size is not None and size < MIN_SIZE:
        raise ValueError(f"--size must be at least {MIN_SIZE} pixels, got {size}")
    if batch is not None and batch < 1:
        raise ValueError(f"--batch must be at least 1, got {batch}")
    if repeats is not None and repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {repeats}")
    if threads is not None and threads < 0:
        raise ValueError(f"--threads must be 0 (torch's default) or more, got {threads}")
    resolved = resolve_device(device or "cpu")
    if quick:
        plan = BenchPlan(quick=True, size=64, solver_size=32, repeats=3, single_repeats=9, geodesic_frames=(8,),
                         scaling_frames=(4, 8), scaling_sizes=(32, 64), scaling_repeats=2, memory_frames=(4, 8),
                         variance_size=32, variance_samples=4, variance_trials=8, profile_steps=1,
                         spatial_samples=4, spatial_memory_size=128,
                         crop_size=32, crop_samples=16)
    else:
        plan = BenchPlan()
    plan.device = str(resolved)
    if threads is None:
        plan.threads = 1 if resolved.type == "cpu" else None
    else:
        plan.threads = threads or None
    if size is not None:
        plan.size = plan.solver_size = plan.variance_size = plan.crop_size = size
    if batch is not None:
        plan.batch = batch
    if repeats is not None:
        plan.repeats = repeats
        plan.single_repeats = 3 * repeats
        plan.scaling_repeats = min(plan.scaling_repeats, repeats)
    return plan


def _goal_report(ratios: dict[str, float], plan: BenchPlan | None = None) -> dict[str, dict]:
    report = {}
    for name, (relation, target) in GOALS.items():
        value = ratios.get(name)
        met = None if value is None else (value <= target if relation == "<=" else value >= target)
        report[name] = {"goal": f"{relation} {target}", "value": value, "met": met}
        conditions = GOAL_CONDITIONS.get(name)
        if conditions is not None:
            report[name]["stated_at"] = conditions
            report[name]["applies"] = plan is not None and all(getattr(plan, key) == wanted
                                                                for key, wanted in conditions.items())
    return report


def section_count(plan: BenchPlan) -> int:
    """Number of progress steps :func:`run_suite` reports (sections)."""
    return 10 + len(plan.geodesic_frames)


def run_suite(plan: BenchPlan, progress: Callable[[str], None] | None = None,
              tick: Callable[[], None] | None = None) -> dict:
    """Run every section of ``plan``; return the full record (``ratios``, ``goals``, sections, environment).

    ``progress(name)`` is called as each section finishes, ``tick()`` after every timed round.
    """
    previous_threads = torch.get_num_threads()
    if plan.threads is not None:
        torch.set_num_threads(plan.threads)
    try:
        return _run_sections(plan, progress, tick)
    finally:
        torch.set_num_threads(previous_threads)


def _run_sections(plan: BenchPlan, progress: Callable[[str], None] | None,
                  tick: Callable[[], None] | None) -> dict:
    """:func:`run_suite` with the thread count already set."""
    clock = Stopwatch()
    device = torch.device(plan.device)
    section_seconds: dict[str, float] = {}

    def announce(name: str) -> None:
        section_seconds[name] = round(clock.lap(), 2)
        if progress is not None:
            progress(name)

    tick = tick or (lambda: None)
    record: dict = {"schema": SCHEMA, "quick": plan.quick, "environment": environment(device),
                    "plan": asdict(plan), "definitions": definitions(plan)}
    metric = benchmarks.timing_metric(device)

    single = benchmarks.measure_single(metric, plan.size, plan.batch, plan.single_repeats, plan.warmup, tick)
    announce("single")
    barycenter = benchmarks.measure_barycenter(metric, plan.solver_size, plan.references, plan.batch, plan.repeats,
                                               plan.warmup, tick)
    announce("barycenter")
    geodesic = {}
    for frames in plan.geodesic_frames:
        geodesic[f"K{frames}"] = benchmarks.measure_geodesic(metric, plan.solver_size, frames, plan.batch,
                                                             plan.chunk_size, plan.repeats, plan.warmup, tick)
        announce(f"geodesic K={frames}")
    configurations = [(plan.solver_size, frames) for frames in plan.scaling_frames]
    configurations += [(size, plan.scaling_frames_at_sizes) for size in plan.scaling_sizes
                       if (size, plan.scaling_frames_at_sizes) not in configurations]
    scaling = benchmarks.measure_geodesic_scaling(metric, configurations, plan.batch, plan.chunk_size,
                                                  plan.scaling_repeats, plan.warmup, tick)
    announce("scaling")
    memory = (measure_memory(plan.solver_size, list(plan.memory_frames), plan.batch, plan.memory_chunk_size,
                             device, tick) if plan.memory_frames else {"rows": [], "note": "not measured (no K)"})
    announce("memory")
    variance_metric = benchmarks.timing_metric(device, scale_levels=None)
    variance = benchmarks.measure_variance(variance_metric, plan.variance_size, plan.variance_samples,
                                           plan.variance_trials, plan.warmup, tick)
    announce("variance")
    spatial = {"timing": measure_spatial(metric, plan.size, plan.spatial_samples, plan.repeats, plan.warmup, tick)}
    if plan.spatial_memory_size and device.type == "cpu":
        spatial["memory"] = measure_spatial_memory(plan.spatial_memory_size, plan.spatial_samples)
    announce("spatial")
    crop = measure_crop_mode(device, plan.crop_size, plan.single_repeats, plan.warmup, plan.crop_pairs,
                             plan.crop_samples, tick)
    announce("crop")
    if device.type == "cuda":
        cuda = measure_precision(metric, plan.size, plan.batch, plan.precision_samples, plan.repeats, plan.warmup,
                                 tick=tick)
    else:
        cuda = {"status": "not available" if not torch.cuda.is_available() else "not requested (--device cuda)"}
    announce("cuda")
    precision = measure_precision_speed(metric, plan.size, plan.solver_size, plan.batch, plan.references,
                                        plan.precision_frames, plan.chunk_size, plan.repeats, plan.warmup, tick=tick)
    announce("precision")
    profile = profile_single(metric, plan.size, plan.batch, plan.profile_steps)
    announce("profile")

    ratios = {**single["ratios"], **barycenter["ratios"]}
    per_k = {f"geodesic_speedup_k{result['frames']}": result["ratios"]["geodesic_speedup"]
             for result in geodesic.values()}
    if per_k:
        ratios["geodesic_speedup"] = min(per_k.values())
    ratios.update(per_k)
    ratios["variance_efficiency_gain"] = variance["efficiency_gain"]
    ratios["map_vs_distance"] = spatial["timing"]["ratios"]["map_vs_distance"]
    ratios["crop_speedup"] = crop["speed"]["crop_speedup"]
    ratios.update(precision["ratios"])
    record.update(ratios=ratios, goals=_goal_report(ratios, plan), single=single, barycenter=barycenter,
                  geodesic=geodesic, scaling=scaling, memory=memory, variance=variance, spatial=spatial, crop=crop,
                  cuda=cuda, precision=precision, profile=profile)
    record["environment"]["load_average_end"] = load_average()
    record["duration_s"] = clock.total()
    record["section_seconds"] = section_seconds
    return record


def definitions(plan: BenchPlan) -> dict[str, str]:
    """The exact meaning of every ratio, as written into the JSON and Markdown."""
    b = plan.batch
    return {
        "elpips_vs_vgg_features": f"time of E-LPIPS-VGG metric(x, y).sum().backward() (x: {b} image(s) requiring "
                                  "grad, y fixed, n=1, scale_levels=1) / time of torchvision VGG16 `features` (same "
                                  "frozen weights) forward+backward on x plus a no-grad forward on y, same size",
        "elpips_vs_vgg_features_padded": "the same, VGG on images padded by 7 px (the size E-LPIPS's offset step "
                                         "feeds the network): E-LPIPS's overhead beyond its convolutions",
        "elpips_vs_vgg_features_channels_last": "the same, VGG in channels-last memory format (input and weights): "
                                                "the like-for-like ratio where E-LPIPS itself runs channels-last "
                                                "(its default on the CPU); the goal is stated against the plain "
                                                "torchvision layout above",
        "elpips_vs_lpips": "time of the E-LPIPS side / time of the lpips package's LPIPS-VGG "
                           "peer(x, y, normalize=True).sum().backward() (same backbone weights)",
        "barycenter_speedup": f"time of a naive step ({plan.references} calls metric(x, r_i, n={b}), each "
                              "backward: 2N forward, N backward) / time of elpips.barycenters.shared_step (x's "
                              "features once, references without a graph, one backward), power 2",
        "geodesic_speedup": "time of a naive path step (K calls metric(x_k, x_k+1, n=batch), each backward) / "
                            "time of the shared step (elpips.geodesics.path_step: every frame once under one "
                            f"sample, chunk_size {plan.chunk_size}); the smallest over K in the plan",
        "variance_efficiency_gain": f"(var x time) of the mean of {plan.variance_samples} independent single "
                                    f"samples / (var x time) of one stratified batch of {plan.variance_samples} "
                                    "(metric.sample_distances(x, y, n)), d(cat, dog), default scales",
        "map_vs_distance": f"time of elpips.spatial.distance_map(metric, x, y, n={plan.spatial_samples}) / time of "
                           f"metric.sample_distances(x, y, n={plan.spatial_samples}), same transforms, no grad, "
                           f"{plan.size} px, cat vs dog",
        "crop_speedup": f"time of E-LPIPS-VGG metric(x, y).sum().backward() in pad mode / the same in crop mode "
                        f"(--crop-instead-of-pad), {plan.crop_size} px, one scale level, alternated rounds; "
                        f"the crop section also gives the mean relative distance difference over "
                        f"{plan.crop_pairs} example pairs ({plan.crop_samples} samples each)",
        f"elpips_<p>_vs_{FLOOR}": f"time of E-LPIPS-VGG metric(x, y).sum().backward() in precision <p> "
                                  f"(Metric(precision=<p>), the device's default layout, {b} pair(s), {plan.size} "
                                  "px) / time of torchvision-layout VGG16 `features` in float32 and channels-last "
                                  "memory format (input and weights), forward+backward on x plus a no-grad forward "
                                  "on y; every precision and the floor in one interleaved loop",
        "<p>_vs_float32": "time of the E-LPIPS side in precision <p> / in float32, same loop (below 1: faster)",
        "barycenter_<p>_vs_float32": f"time of elpips.barycenters.shared_step (N = {plan.references}, "
                                     f"{plan.solver_size} px) with Metric(precision=<p>) / with float32",
        "geodesic_<p>_vs_float32": f"time of elpips.geodesics.path_step (K = {plan.precision_frames}, "
                                   f"{plan.solver_size} px) with Metric(precision=<p>) / with float32",
    }


def write_results(record: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``<out_dir>/<YYYYmmdd-HHMMSS>.json`` and ``.md`` atomically; return both paths."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = Path(out_dir)
    json_path = write_json(folder / f"{stamp}.json", record)
    markdown_path = write_text(folder / f"{stamp}.md", render_markdown(record))
    return json_path, markdown_path
