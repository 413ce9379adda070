"""Options and helpers shared by the subcommands (metric choice, weights, device, seed, output)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

import elpips
import elpips.io
from elpips import METRIC_NAMES, Metric
from elpips.memory import parse_memory_size

if TYPE_CHECKING:
    from .render.frames import ExportSettings


def add_metric_options(parser: argparse.ArgumentParser, default: str = "elpips-vgg",
                       choices: tuple[str, ...] = METRIC_NAMES) -> None:
    """``--metric --backbone-weights --seed --device`` as every metric-using command has them."""
    parser.add_argument("--metric", default=default, choices=choices, help=f"distance to use (default {default})")
    parser.add_argument(
        "--backbone-weights", default="imagenet", metavar="imagenet|PATH|random",
        help="'imagenet' (torchvision weights, cached in $TORCH_HOME, downloaded on first use), a torchvision "
             "state-dict file, or 'random[:SEED]' (uncalibrated, for smoke tests)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the ensemble sampling (reproducible runs)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    parser.add_argument("--memory-budget", type=memory_size, default=None, metavar="SIZE",
                        help="memory one network pass may use, e.g. 512M or 4G (default: 2G or a quarter of the "
                             "free memory on the CPU, half the free GPU memory); more samples take more passes, "
                             "not more memory")
    parser.add_argument("--max-pixels", type=positive_int, default=None, metavar="N",
                        help=f"largest image accepted, in pixels (default {elpips.io.MAX_PIXELS:,})")


def memory_size(text: str) -> int:
    """argparse type for ``--memory-budget``."""
    try:
        return parse_memory_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def apply_pixel_limit(args: argparse.Namespace) -> None:
    """Raise or lower :data:`elpips.io.MAX_PIXELS` for this command if ``--max-pixels`` was given."""
    if getattr(args, "max_pixels", None) is not None:
        elpips.io.MAX_PIXELS = args.max_pixels


def make_metric(args: argparse.Namespace, name: str | None = None, seed: int | None = None,
                announce: bool = True) -> Metric:
    """Build the metric the options ask for (``name`` and ``seed`` override ``--metric`` and ``--seed``) and,
    if ``announce``, warn on stderr when its backbone is uncalibrated."""
    from elpips.solver import phase

    name = name or args.metric
    with phase(f"{name}: loading the network and its weights", enabled=announce):
        metric = Metric(name, backbone_weights=args.backbone_weights, device=args.device,
                        seed=args.seed if seed is None else seed, memory_budget=getattr(args, "memory_budget", None))
    if announce and not metric.calibrated:
        print(f"note: {metric.weights_info.description}", file=sys.stderr)
    return metric


DEFAULT_SAMPLES = 32

UNCALIBRATED = "UNCALIBRATED: random backbone"
"""How every text output marks a metric on random (uncalibrated) backbone weights."""


def calibration_label(name: str, calibrated: bool, short: bool = False) -> str:
    """``name``, marked when its backbone is uncalibrated so that no output hides random weights:
    ``elpips-vgg [UNCALIBRATED: random backbone]``, or ``elpips-vgg (random)`` where space is short (captions)."""
    if calibrated:
        return name
    return f"{name} (random)" if short else f"{name} [{UNCALIBRATED}]"


def metric_label(metric: Metric) -> str:
    """:func:`calibration_label` of a metric."""
    return calibration_label(metric.name, metric.calibrated)


def add_sampling_options(parser: argparse.ArgumentParser) -> None:
    """``--samples N | --auto`` plus the stopping bounds of ``--auto``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--samples", type=positive_int, default=DEFAULT_SAMPLES, metavar="N",
                       help=f"average N ensemble samples (default {DEFAULT_SAMPLES}; E-LPIPS only)")
    group.add_argument("--auto", action="store_true",
                       help="sample until the 95%% half-width is below --abs-tol and --rel-tol, as the "
                            "reference's evaluation tool does (can take thousands of samples)")
    parser.add_argument("--abs-tol", type=float, default=0.01, help="--auto: absolute half-width bound (0.01)")
    parser.add_argument("--rel-tol", type=float, default=0.025, help="--auto: relative half-width bound (0.025)")
    parser.add_argument("--max-samples", type=positive_int, default=5000, help="--auto: sample cap (5000)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def weights_report(metric: Metric) -> dict:
    """The weights' origin as written into JSON outputs."""
    return {
        "metric": metric.name,
        "backbone_weights": metric.weights_info.source,
        "backbone_weights_description": metric.weights_info.description,
        "calibrated": metric.calibrated,
        "linear_weights": metric.linear_weights_source,
        "elpips_version": elpips.__version__,
    }


def progress_bar(description: str, total: int, unit: str = "sample", enabled: bool = True):
    """Progress on stderr: a tqdm bar on a terminal, plain periodic lines otherwise (used like a tqdm bar)."""
    from elpips.solver import ProgressReport

    return ProgressReport(description, total, unit=unit, enabled=enabled)


def default_run_dir(kind: str, root: str = "outputs") -> "Path":
    """``outputs/<kind>-YYYYmmdd-HHMMSS`` (relative to the working directory)."""
    import time
    from pathlib import Path

    return Path(root) / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


def add_export_options(parser: argparse.ArgumentParser, defaults_from_log: bool = False) -> None:
    """``--row --scale --fps --pingpong/--no-pingpong`` (``None`` = keep the run's or use the default)."""
    keep = " (default: as in log.json)" if defaults_from_log else ""
    parser.add_argument("--row", type=int, default=None, help=f"scanline row (default: middle){keep}")
    parser.add_argument("--scale", type=int, default=None, help=f"enlargement of scanline plots{keep}")
    parser.add_argument("--fps", type=float, default=None, help=f"animation frame rate (default 8){keep}")
    parser.add_argument("--pingpong", action=argparse.BooleanOptionalAction, default=None,
                        help=f"GIF plays forward and back (default on){keep}")


def settings_from(args: argparse.Namespace, base: ExportSettings | None = None) -> ExportSettings:
    """Export settings: ``base`` (or the defaults) with the options the user gave."""
    from .render.frames import ExportSettings

    settings = base or ExportSettings()
    return ExportSettings(
        row=settings.row if args.row is None else args.row,
        scale=settings.scale if args.scale is None else args.scale,
        fps=settings.fps if args.fps is None else args.fps,
        pingpong=settings.pingpong if args.pingpong is None else args.pingpong,
    )
