"""``elpips check-device``: do the metric and the solver steps give the right numbers on this device?

Every check compares float32 on ``--device`` with a float64 recomputation on the CPU (same seeded random
weights, same fixed ensemble sample, dropout off so that the random streams of the two devices do not matter),
or two float32 runs on the device that must agree (the two memory layouts under one sample, dropout on).
Writes ``<out>/device_check-<timestamp>.json`` and exits 1 if any check fails. On the CPU it checks float32
against float64 (the test suite runs it that way); the point is a GPU (``--device cuda``), where it also
records the error with TF32 convolutions and matrix products (PyTorch's cuDNN default) next to plain float32.

The 16-bit precisions (``Metric(precision=...)``: bfloat16, and float16 where the device runs it, i.e. CUDA) are
checked against the same float64 recomputation with looser tolerances (:data:`PRECISION_TOLERANCES`), judged for
the metrics in :data:`PRECISION_JUDGED` and recorded for the others, whose bfloat16 numbers in
docs/performance.md are already looser; their speed-ups over float32 on the device are reported, not judged.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator

import elpips
import torch
from elpips.devices import resolve_device
from elpips.dropout import DropoutMasks
from elpips.io import write_json

DEFAULT_OUT = "outputs/device_check"
METRICS = ("elpips-vgg", "elpips-squeeze", "lpips-vgg", "lpips-squeeze")
DISTANCE_TOLERANCE = 1e-4
"""Largest relative distance error of float32 against float64 (TF32 runs are recorded, not judged)."""
GRADIENT_TOLERANCE = 1e-3
"""Largest relative L2 error of a float32 gradient against float64 (ReLU kinks and max-pooling near-ties
move single elements; see tests/core/test_fused_ops.py)."""


PRECISIONS = ("bfloat16", "float16")
PRECISION_TOLERANCES = {"distance_median": 0.005, "distance_max": 0.02, "gradient_cosine": 0.99}
"""A 16-bit precision against float64, per image at fixed ensemble samples: median and largest relative distance
error, and the smallest cosine between the input gradients."""
PRECISION_JUDGED = ("elpips-vgg",)
"""Metrics whose 16-bit runs must meet :data:`PRECISION_TOLERANCES`; the others (LPIPS-VGG's gradient, SqueezeNet's
2x2 maps: docs/performance.md, "Precision") are recorded only."""


def _images(count: int, size: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 3, size, size, generator=generator, dtype=torch.float64)


def _relative(value: torch.Tensor, reference: torch.Tensor) -> float:
    """Relative L2 error of ``value`` (any device, any float dtype) against a float64 CPU ``reference``."""
    return float((value.detach().cpu().double() - reference).norm() / reference.norm().clamp_min(1e-300))


@contextlib.contextmanager
def _tf32(enabled: bool, device: torch.device) -> Iterator[None]:
    """Allow or forbid TF32 in cuDNN convolutions and CUDA matrix products (no-op elsewhere)."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _distance_and_gradient(metric: elpips.Metric, x: torch.Tensor, y: torch.Tensor, record) -> tuple:
    variable = x.clone().requires_grad_(True)
    distances = metric(variable, y, transform=record, dropout=False)
    distances.sum().backward()
    return distances.detach(), variable.grad


def check_metric(name: str, device: torch.device, size: int = 48) -> dict:
    """One metric, fixed sample without dropout: device float32 (both layouts, TF32 on/off) vs CPU float64."""
    reference_metric = elpips.Metric(name, backbone_weights="random", device="cpu").double()
    x, y = _images(2, size, 1), _images(2, size, 2)
    record = elpips.sample_transform(2, size, size, scale_levels=2, generator=torch.Generator().manual_seed(3))
    expected, expected_grad = _distance_and_gradient(reference_metric, x, y, record)
    metric = elpips.Metric(name, backbone_weights="random", device=device)
    runs = {}
    for tf32 in ((False, True) if device.type == "cuda" else (False,)):
        for channels_last in (False, True):
            metric.channels_last = channels_last
            with _tf32(tf32, device):
                got, grad = _distance_and_gradient(metric, x.float().to(device), y.float().to(device), record)
            key = f"{'channels_last' if channels_last else 'default_layout'}{'_tf32' if tf32 else ''}"
            runs[key] = {"distance_error": _relative(got, expected), "gradient_error": _relative(grad, expected_grad)}
            if not tf32:
                runs[key]["passed"] = (runs[key]["distance_error"] < DISTANCE_TOLERANCE
                                       and runs[key]["gradient_error"] < GRADIENT_TOLERANCE)
    return {"metric": name, "size": size, "runs": runs, "passed": all(run.get("passed", True) for run in runs.values())}


def judge_precision(errors: dict, tolerances: dict | None = None) -> list[str]:
    """What ``errors`` (``distance_median``, ``distance_max``, ``gradient_cosine``) breaks of ``tolerances``
    (default :data:`PRECISION_TOLERANCES`): one line per broken bound, empty when it passes. A missing or
    non-finite number breaks its bound."""
    tolerances = PRECISION_TOLERANCES if tolerances is None else tolerances
    broken = []
    for key, bound in tolerances.items():
        value = errors.get(key)
        finite = isinstance(value, (int, float)) and value == value and abs(value) != float("inf")
        if key == "gradient_cosine":
            if not finite or value < bound:
                broken.append(f"{key} {value} < {bound}")
        elif not finite or value > bound:
            broken.append(f"{key} {value} > {bound}")
    return broken


def device_precisions(device: torch.device, requested: tuple[str, ...] = PRECISIONS) -> dict[str, str | None]:
    """``{precision: None}`` for each of ``requested`` the device runs, ``{precision: why not}`` for the others
    (float16 off CUDA)."""
    from elpips.precision import resolve_precision

    available: dict[str, str | None] = {}
    for precision in requested:
        try:
            resolve_precision(precision, device)
            available[precision] = None
        except ValueError as error:
            available[precision] = str(error)
    return available


def precision_errors(name: str, device: torch.device, precision: str, size: int = 48, images: int = 6) -> dict:
    """``name`` in ``precision`` on ``device`` against float64 on the CPU: fixed sample per image, dropout off.
    Returns ``distance_median``, ``distance_max`` (relative, per image) and ``gradient_cosine`` (the smallest
    over images)."""
    reference_metric = elpips.Metric(name, backbone_weights="random", device="cpu").double()
    x, y = _images(images, size, 11), _images(images, size, 12)
    y = (0.7 * x + 0.3 * y)  # nearby pairs, where the relative error of a distance is hardest
    record = elpips.sample_transform(images, size, size, scale_levels=2, generator=torch.Generator().manual_seed(13))
    expected, expected_grad = _distance_and_gradient(reference_metric, x, y, record)
    metric = elpips.Metric(name, backbone_weights="random", device=device, precision=precision)
    got, grad = _distance_and_gradient(metric, x.float().to(device), y.float().to(device), record)
    got, grad = got.cpu().double(), grad.cpu().double()
    relative = (got - expected).abs() / expected.abs().clamp_min(1e-12)
    cosine = torch.nn.functional.cosine_similarity(grad.flatten(1), expected_grad.flatten(1), dim=1)
    return {"distance_median": float(relative.median()), "distance_max": float(relative.max()),
            "gradient_cosine": float(cosine.min())}


def check_precisions(device: torch.device, metrics: tuple[str, ...], precisions: tuple[str, ...] = PRECISIONS,
                     size: int = 48) -> dict:
    """Every metric in every 16-bit precision the device runs: its errors, the broken bounds, and whether it is
    judged (``passed`` ``True``/``False``) or recorded (``passed`` ``None``)."""
    results: dict = {"tolerances": PRECISION_TOLERANCES, "judged_metrics": list(PRECISION_JUDGED), "runs": [],
                     "skipped": {}}
    for precision, why_not in device_precisions(device, precisions).items():
        if why_not is not None:
            results["skipped"][precision] = why_not
            continue
        for name in metrics:
            errors = precision_errors(name, device, precision, size)
            broken = judge_precision(errors)
            judged = name in PRECISION_JUDGED
            results["runs"].append({"metric": name, "precision": precision, **errors, "broken": broken,
                                    "passed": (not broken) if judged else None})
    results["passed"] = all(run["passed"] is not False for run in results["runs"])
    return results


def precision_speedups(device: torch.device, precisions: tuple[str, ...] = PRECISIONS, size: int = 128,
                       batch: int = 4, repeats: int = 5) -> dict:
    """Paired speed-ups (float32 time / precision time) of E-LPIPS-VGG forward+backward on ``device``, one
    scale level, random weights: reported, not judged."""
    from elpips.benchmarks.timing import paired_ratio, paired_timings, summarize

    x0, y = _images(batch, size, 14).float().to(device), _images(batch, size, 15).float().to(device)
    sides = {}
    skipped = {}
    for precision, why_not in device_precisions(device, ("float32", *precisions)).items():
        if why_not is not None:
            skipped[precision] = why_not
            continue
        metric = elpips.Metric("elpips-vgg", backbone_weights="random", device=device, seed=0, scale_levels=1,
                               precision=precision)

        def side(metric: elpips.Metric = metric) -> None:
            metric(x0.clone().requires_grad_(True), y).sum().backward()

        sides[precision] = side
    times = paired_timings(sides, repeats, warmup=1, device=device)
    return {"size": size, "batch": batch, "repeats": repeats, "skipped": skipped,
            "speedup_vs_float32": {name: paired_ratio(times["float32"], times[name]) for name in times
                                   if name != "float32"},
            "timings": {name: summarize(values) for name, values in times.items()}}


def check_layouts_with_dropout(device: torch.device, size: int = 48) -> dict:
    """E-LPIPS-VGG with dropout on the device: one sample (same masks) in both layouts gives the same distances,
    and the masks keep about 99% of the elements."""
    x, y = _images(3, size, 4).float().to(device), _images(3, size, 5).float().to(device)
    distances = []
    for channels_last in (False, True):
        metric = elpips.Metric("elpips-vgg", backbone_weights="random", device=device, seed=6,
                               channels_last=channels_last)
        with torch.no_grad():
            distances.append(metric(x, y, n=4).cpu().double())
    masks = DropoutMasks(seed=7).mask(1, torch.Size((4, 64, 32, 32)), device, torch.float32)
    keep_rate = float((masks > 0).float().mean())
    error = _relative(distances[1], distances[0])
    return {"layout_distance_error": error, "mask_keep_rate": keep_rate,
            "passed": error < DISTANCE_TOLERANCE and abs(keep_rate - 0.99) < 0.003}


def check_solver_steps(device: torch.device, size: int = 32, frames: int = 4) -> dict:
    """One geodesic path step and one barycenter step (fixed sample, no dropout): device vs CPU float64."""
    from elpips.barycenters import shared_step
    from elpips.geodesics import path_step

    path = _images(frames + 1, size, 8)
    free = torch.tensor([False] + [True] * (frames - 1) + [False])
    record = elpips.sample_transform(2, size, size, scale_levels=1, generator=torch.Generator().manual_seed(9))
    references = _images(3, size, 10)
    coefficients = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    results = {}
    for label, metric, dtype in (("reference", elpips.Metric("elpips-vgg", backbone_weights="random",
                                                              device="cpu").double(), torch.float64),
                                 ("device", elpips.Metric("elpips-vgg", backbone_weights="random", device=device),
                                  torch.float32)):
        target = torch.device("cpu") if label == "reference" else device
        sample = metric.sample_for(record, dropout=False)
        variable = path[1:-1].to(target, dtype).clone().requires_grad_(True)
        distances = path_step(metric, path.to(target, dtype), free, variable, sample, samples=2, chunk_size=2)
        x = references.mean(dim=0, keepdim=True).to(target, dtype).requires_grad_(True)
        to_references = shared_step(metric, x, references.to(target, dtype), coefficients.to(target, dtype), 2.0,
                                    sample, samples=2)
        results[label] = (distances, variable.grad, to_references, x.grad)
    expected = [tensor.double() for tensor in results["reference"]]
    names = ("path_distance_error", "path_gradient_error", "barycenter_distance_error", "barycenter_gradient_error")
    errors = {name: _relative(got, want) for name, got, want in zip(names, results["device"], expected, strict=False)}
    passed = all(errors[name] < (DISTANCE_TOLERANCE if "distance" in name else GRADIENT_TOLERANCE) for name in names)
    return {**errors, "passed": passed}


def run_checks(device: str | torch.device | None = None, metrics: tuple[str, ...] | None = None,
               precisions: tuple[str, ...] = PRECISIONS, speed_size: int | None = 128) -> dict:
    """All checks on ``device`` (``metrics``: default :data:`METRICS`; ``precisions``: the 16-bit ones to check,
    ``()`` for none; ``speed_size``: image side of the speed-ups, ``None`` to skip them);
    ``{"device", "passed", "metrics", "dropout_layouts", "solvers", "precisions", "speed", ...}``."""
    device = resolve_device(device)
    metrics = METRICS if metrics is None else metrics
    started = time.perf_counter()
    record = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "torch": torch.__version__,
        "backbone": "seeded random (weights do not change what is checked)",
        "tolerances": {"distance_relative": DISTANCE_TOLERANCE, "gradient_relative_l2": GRADIENT_TOLERANCE},
        "metrics": [check_metric(name, device) for name in metrics],
        "dropout_layouts": check_layouts_with_dropout(device),
        "solvers": check_solver_steps(device),
        "precisions": check_precisions(device, metrics, precisions),
    }
    if speed_size is not None and precisions:
        record["speed"] = precision_speedups(device, precisions, speed_size)
    record["passed"] = (all(result["passed"] for result in record["metrics"])
                        and record["dropout_layouts"]["passed"] and record["solvers"]["passed"]
                        and record["precisions"]["passed"])
    record["duration_s"] = time.perf_counter() - started
    return record


def _precision_list(text: str) -> tuple[str, ...]:
    precisions = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = sorted(set(precisions) - set(PRECISIONS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown precisions {unknown}; choose from {', '.join(PRECISIONS)}")
    return precisions


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check-device",
        description="Compare distances and gradients of every network metric and of one geodesic and one "
                    "barycenter step on --device (float32, both memory layouts; on CUDA also with TF32) with a "
                    "float64 recomputation on the CPU; the same for bfloat16 and (CUDA only) float16 with looser "
                    "tolerances, judged for E-LPIPS-VGG and recorded for the others, and their speed-ups over "
                    "float32 on the device. Seeded random backbone; a few minutes on a CPU. "
                    "Exit 1 if a check fails.",
    )
    parser.add_argument("--precisions", type=_precision_list, default=PRECISIONS,
                        help="16-bit precisions to check, comma-separated ('' for none; float16 only on CUDA)")
    parser.add_argument("--speed-size", type=int, default=128,
                        help="image side of the precision speed-ups; 0 skips them")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: the metric's default)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="output folder")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from elpips.io import ensure_output_dir

    out_dir = ensure_output_dir(args.out)
    record = run_checks(args.device, precisions=args.precisions, speed_size=args.speed_size or None)
    for result in record["metrics"]:
        for key, run_result in result["runs"].items():
            verdict = {True: "ok", False: "FAILED"}.get(run_result.get("passed"), "recorded")
            print(f"{result['metric']:15s} {key:22s} distance {run_result['distance_error']:.1e}  "
                  f"gradient {run_result['gradient_error']:.1e}  {verdict}")
    dropout = record["dropout_layouts"]
    print(f"dropout layouts: distance {dropout['layout_distance_error']:.1e}, keep rate "
          f"{dropout['mask_keep_rate']:.4f}  {'ok' if dropout['passed'] else 'FAILED'}")
    solvers = record["solvers"]
    print("solver steps: " + ", ".join(f"{key} {value:.1e}" for key, value in solvers.items() if key != "passed")
          + f"  {'ok' if solvers['passed'] else 'FAILED'}")
    checked = record["precisions"]
    for run_result in checked["runs"]:
        verdict = {True: "ok", False: "FAILED " + "; ".join(run_result["broken"]), None: "recorded"}[
            run_result["passed"]]
        print(f"{run_result['metric']:15s} {run_result['precision']:9s} distance median "
              f"{run_result['distance_median']:.2%} max {run_result['distance_max']:.2%}  gradient cosine "
              f"{run_result['gradient_cosine']:.4f}  {verdict}")
    for precision, why in checked["skipped"].items():
        print(f"{precision}: skipped ({why})")
    if "speed" in record:
        print("speed-up vs float32 (E-LPIPS-VGG forward+backward, "
              f"{record['speed']['size']} px, batch {record['speed']['batch']}): "
              + ", ".join(f"{name} {value:.2f}x" for name, value in record["speed"]["speedup_vs_float32"].items()))
    path = write_json(out_dir / f"device_check-{time.strftime('%Y%m%d-%H%M%S')}.json", record)
    print(f"{'all checks passed' if record['passed'] else 'SOME CHECKS FAILED'} on {record['device']} "
          f"({record['duration_s']:.0f} s); wrote {path}")
    return 0 if record["passed"] else 1
