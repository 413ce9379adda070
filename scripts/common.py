"""Options and helpers shared by the subcommands (metric choice, ensemble, weights, device, seed, output)."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import elpips
import elpips.io
import torch
from elpips import CONFIGS, METRIC_NAMES, EnsembleConfig, Metric, get_config
from elpips.ensemble import COLOR_MODES, DEPENDENT_VALUES
from elpips.memory import parse_memory_size
from elpips.precision import PRECISIONS
from elpips.solver.averaging import DEFAULT_AVERAGE_LAST

from .run_folder import ENVIRONMENT

if TYPE_CHECKING:
    from pathlib import Path

    from .render.frames import ExportSettings


def samples_text(count: int) -> str:
    """``"1 sample"``, ``"10 samples"``."""
    return f"{count} sample{'' if count == 1 else 's'}"


def metric_choices_help(choices: Iterable[str]) -> str:
    """One line per metric name with what it is (for ``--help``)."""
    return "; ".join(f"{name}: {CONFIGS[name].description}" for name in choices)


def add_metric_options(parser: argparse.ArgumentParser, default: str = "elpips-vgg",
                       choices: tuple[str, ...] = METRIC_NAMES) -> None:
    """``--metric --backbone-weights --seed --device`` and the ensemble options, as every metric-using command
    has them."""
    group = parser.add_argument_group("metric", "which distance, its weights, seed, device and limits")
    group.add_argument("--metric", default=default, choices=choices, metavar="NAME",
                       help=f"distance to use. {metric_choices_help(choices)}")
    group.add_argument(
        "--backbone-weights", default="imagenet", metavar="imagenet|PATH|random",
        help="'imagenet' (torchvision weights, cached in $TORCH_HOME, downloaded on first use), a torchvision "
             "state-dict file, or 'random[:SEED]' (uncalibrated, for smoke tests)",
    )
    group.add_argument("--seed", type=seed_value, default=None,
                       help="seed of the ensemble sampling (reproducible runs), 0 .. 2**63 - 1")
    group.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    group.add_argument("--memory-budget", type=memory_size, default=None, metavar="SIZE",
                       help="memory one network pass may use, e.g. 512M or 4G (default: 2G or a quarter of the "
                            "free memory on the CPU, half the free GPU memory); more samples take more passes, "
                            "not more memory")
    group.add_argument("--max-pixels", type=positive_int, default=None, metavar="N",
                       help=f"largest image accepted, in pixels (default: {elpips.io.DEFAULT_MAX_PIXELS:,})")
    add_threads_option(group)
    group.add_argument("--precision", choices=PRECISIONS, default="float32",
                       help="arithmetic of the network: float32, bfloat16, float16 (CUDA only) or auto (bfloat16 "
                            "where the hardware has it natively); recorded as used (docs/performance.md#precision)")
    add_ensemble_options(parser)


MAX_DEFAULT_THREADS = 4
"""The most CPU threads :func:`default_threads` picks (more rarely helps the metric's small convolutions)."""


def default_threads() -> int:
    """torch's CPU threads when ``--threads`` is not given: the CPUs this process may run on (its affinity), shared
    among the ranks of this machine (``LOCAL_WORLD_SIZE`` under torchrun), no more than the CPUs left idle by the
    machine's load (on a busy shared machine threads that wait for each other were 4-5x slower than one), capped at
    :data:`MAX_DEFAULT_THREADS`; at least 1."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    threads = cpus // max(local_ranks, 1)
    with contextlib.suppress(OSError, AttributeError):  # no load average on Windows
        threads = min(threads, int(cpus - os.getloadavg()[0]))
    return max(1, min(threads, MAX_DEFAULT_THREADS))


def add_threads_option(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--threads N``: torch's CPU threads while the command runs (:func:`command_settings`)."""
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help=help or "CPU threads of torch while the command runs (default: the CPUs this process "
                                     "may use, split among the ranks of a torchrun on this machine and limited to "
                                     f"the idle ones, at most {MAX_DEFAULT_THREADS}); recorded in the run record")


SEED_LIMIT = 2**63
"""``--seed`` takes 0 .. SEED_LIMIT - 1: the commands derive further seeds by adding small offsets, which must stay
within a generator's 64-bit seed."""


def seed_value(text: str) -> int:
    """argparse type for ``--seed``: an integer in ``0 .. 2**63 - 1``."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be an integer in 0 .. 2**63 - 1, got {text!r}")
    return value


def memory_size(text: str) -> int:
    """argparse type for ``--memory-budget``."""
    try:
        return parse_memory_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


@contextlib.contextmanager
def command_settings(args: argparse.Namespace) -> Iterator[None]:
    """The per-command process settings, in force for one command and restored after it (``cli.main`` and
    ``batch`` for every job): the pixel limit (``--max-pixels``, the limit in force when not given) and torch's CPU
    threads (``--threads``; :func:`default_threads` for a command that has the option without a value; commands
    without it leave torch as it is)."""
    threads = torch.get_num_threads()
    with elpips.io.pixel_limit(getattr(args, "max_pixels", None)):
        if hasattr(args, "threads"):
            torch.set_num_threads(args.threads or default_threads())
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def _keep_probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value) or not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1], got {text}")
    return value


def add_ensemble_options(parser: argparse.ArgumentParser) -> None:
    """The ensemble switches (docs/algorithm.md#ensemble). They change the named metric's own ensemble: ``--no-X``
    switches piece X off (nothing to do for a metric without it); a parameter needs its piece on."""
    group = parser.add_argument_group(
        "ensemble", "switch pieces of the E-LPIPS ensemble off or change their parameters (applied to the named "
                    "metric's own ensemble; recorded in every JSON output; see docs/algorithm.md#ensemble)")
    group.add_argument("--no-offset", action="store_true", help="no random offset (translation)")
    group.add_argument("--max-offset", type=positive_int, default=None, metavar="M",
                       help="largest random offset in pixels (default: 7)")
    group.add_argument("--no-flip", action="store_true", help="no random mirroring")
    group.add_argument("--no-swap", action="store_true", help="no random transpose of height and width")
    group.add_argument("--no-permutation", action="store_true", help="no random order of the RGB channels")
    group.add_argument("--no-color", action="store_true", help="no random colour scaling")
    group.add_argument("--color-mode", choices=COLOR_MODES, default=None,
                       help="colour scaling: a factor per channel (color, default) or one for all (brightness)")
    group.add_argument("--no-scaling", action="store_true", help="no random downscaling")
    group.add_argument("--scale-levels", type=positive_int, default=None, metavar="S",
                       help="downscaling levels 1..S (default: min(H, W) // 64 clamped to 1..8)")
    group.add_argument("--no-dropout", action="store_true", help="no dropout inside the network")
    group.add_argument("--dropout-keep", type=_keep_probability, default=None, metavar="P",
                       help="dropout keep probability in (0, 1] (default: 0.99)")
    group.add_argument("--crop-instead-of-pad", action="store_true",
                       help="offset and scale steps crop the image instead of reflect-padding it: a smaller "
                            "network input (faster), but up to M (+ s-1) edge pixels are left out of a sample")
    group.add_argument("--tileable", action="store_true",
                       help="periodic mode for tileable textures: the network sees the images on a torus (random "
                            "circular shift, wrap-around padding, circular convolution padding); outputs tile")


def ensemble_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The ensemble options given on the command line, as :meth:`EnsembleConfig.updated` keywords."""
    changes: dict[str, Any] = {switch: False for switch in ("offset", "flip", "swap", "permutation", "color",
                                                            "scaling", "dropout")
                               if getattr(args, f"no_{switch}", False)}
    for name in DEPENDENT_VALUES:
        if getattr(args, name, None) is not None:
            changes[name] = getattr(args, name)
    if getattr(args, "crop_instead_of_pad", False):
        changes["crop"] = True
    if getattr(args, "tileable", False):
        changes["tileable"] = True
    return changes


_OPTION_FLAGS = {"max_offset": "--max-offset", "color_mode": "--color-mode", "scale_levels": "--scale-levels",
                 "dropout_keep": "--dropout-keep", "crop": "--crop-instead-of-pad"}


def ensemble_for(args: argparse.Namespace, name: str) -> EnsembleConfig:
    """Metric ``name``'s ensemble with the command line's changes (a parameter for a piece it lacks is ignored
    here: :func:`check_ensemble_options` rejects one that no metric of the run can take)."""
    return get_config(name).ensemble.updated(strict=False, **ensemble_changes(args))


def check_ensemble_options(args: argparse.Namespace, names: Iterable[str]) -> None:
    """``ValueError`` (before anything is loaded or written) for contradicting ensemble options, or for a
    parameter that none of the run's metrics ``names`` has the piece for (e.g. --max-offset with lpips-vgg)."""
    changes = ensemble_changes(args)
    names = list(names)
    if not changes or not names:
        return
    for option in ("max_offset", "crop"):
        if changes.get("tileable") and option in changes:
            raise ValueError(f"--tileable and {_OPTION_FLAGS[option]} contradict each other (the tileable offset "
                             f"is a circular shift over the whole period, never padded or cropped)")
    ensembles = [get_config(name).ensemble.updated(strict=False, **changes) for name in names]
    for option, flag in _OPTION_FLAGS.items():
        if option in changes and not any(getattr(ensemble, option) for ensemble in ensembles):
            switch = DEPENDENT_VALUES.get(option, "offset or scaling")
            raise ValueError(f"{flag}: {', '.join(names)} {'has' if len(names) == 1 else 'have'} no {switch} "
                             f"(switched off or not part of the metric)")


def make_metric(args: argparse.Namespace, name: str | None = None, seed: int | None = None,
                announce: bool = True, own_ensemble: bool = False) -> Metric:
    """Build the metric the options ask for: every command builds its metrics here, so that the weights, device,
    memory budget and ensemble options reach each of them. ``name`` and ``seed`` override ``--metric`` and
    ``--seed``; ``own_ensemble`` keeps the named metric's own ensemble (a reference metric beside the one the
    options change). If ``announce``, a load that takes a while is announced on stderr, and so is an
    uncalibrated backbone.

    Without ``name`` the metric is ``--metric`` and its ensemble options are checked here; a caller that passes
    ``name`` runs several metrics and checks the options against all of them (:func:`check_ensemble_options`)
    before building any."""
    from elpips.solver import phase

    if name is None:
        name = args.metric
        check_ensemble_options(args, [name])
    ensemble = get_config(name).ensemble if own_ensemble else ensemble_for(args, name)
    with phase(f"{name}: loading the network and its weights", enabled=announce):
        metric = Metric(name, backbone_weights=args.backbone_weights, device=args.device,
                        seed=args.seed if seed is None else seed, ensemble=ensemble,
                        memory_budget=getattr(args, "memory_budget", None),
                        precision=getattr(args, "precision", "float32"))
    if announce and not metric.calibrated:
        print(f"note: {metric.weights_info.description}", file=sys.stderr)
    return metric


def run_record(args: argparse.Namespace, metrics: Sequence[Metric], seed: int, **options: Any) -> dict[str, Any]:
    """A run's record (``run.json``'s settings, compared on resume): every metric's identity (weights, ensemble,
    precision), the sizing options where the command has them, the seed actually used and the command's own
    ``options``; and, under ``environment`` (recorded, not compared), where it ran: device, memory budget,
    pixel limit and torch's CPU threads."""
    record: dict[str, Any] = {"metrics": [metric.identity() for metric in metrics], "seed": seed}
    if hasattr(args, "fit"):
        record["sizing"] = sizing_from(args).as_dict()
    record.update(options)
    record[ENVIRONMENT] = {"device": str(metrics[0].device) if metrics else None,
                           "memory_budget": getattr(args, "memory_budget", None),
                           "max_pixels": elpips.io.max_pixels(), "threads": torch.get_num_threads()}
    return record


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
    """:func:`calibration_label` of a metric, naming a changed ensemble: ``elpips-vgg [no flip, max offset 3]``."""
    label = metric.name
    if metric.custom_ensemble:
        label += f" [{', '.join(metric.ensemble.differences(metric.config.ensemble))}]"
    return calibration_label(label, metric.calibrated)


def add_sampling_options(parser: argparse.ArgumentParser) -> None:
    """``--samples N | --auto`` plus the stopping bounds of ``--auto``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--samples", type=positive_int, default=DEFAULT_SAMPLES, metavar="N",
                       help="average N ensemble samples (E-LPIPS only)")
    group.add_argument("--auto", action="store_true",
                       help="sample until the 95%% half-width is below --abs-tol and --rel-tol, as the "
                            "reference's evaluation tool does (can take thousands of samples)")
    parser.add_argument("--abs-tol", type=float, default=0.01, help="--auto: absolute half-width bound")
    parser.add_argument("--rel-tol", type=float, default=0.025, help="--auto: relative half-width bound")
    parser.add_argument("--max-samples", type=positive_int, default=5000, help="--auto: sample cap")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def _number_type(kind: Callable[[str], Any], minimum: float, description: str,
                 exclusive: bool = False, maximum: float = math.inf) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)`` (``int`` or ``float``), finite, ``>= minimum`` (``> minimum`` with
    ``exclusive``) and ``<= maximum``; anything else is the argparse error ``must be <description>, got <text>``."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {description}, got {text!r}") from None
        if (isinstance(value, float) and not math.isfinite(value)) or value < minimum \
                or (exclusive and value == minimum) or value > maximum:
            raise argparse.ArgumentTypeError(f"must be {description}, got {text}")
        return value

    return parse


positive_int = _number_type(int, 1, "a positive integer")
"""argparse type: an integer ``>= 1``."""
nonnegative_int = _number_type(int, 0, "a non-negative integer")
"""argparse type: an integer ``>= 0``."""
positive_float = _number_type(float, 0.0, "a positive number", exclusive=True)
"""argparse type: a finite number ``> 0``."""
fraction = _number_type(float, 0.0, "a number in [0, 1]", maximum=1.0)
"""argparse type: a number in ``[0, 1]``."""


def add_averaging_option(parser: argparse.ArgumentParser) -> None:
    """``--average-last F``: the solver returns the mean of its iterates over the last ``F`` of the steps
    (``average_last=`` of both solvers; ``None`` leaves the choice to the solver: ``DEFAULT_AVERAGE_LAST`` for an
    E-LPIPS ensemble, 0 for a deterministic metric)."""
    parser.add_argument("--average-last", type=fraction, default=None, metavar="F",
                        help=f"return the mean of the iterates of the last F of the steps, 0 the last iterate "
                             f"(default: {DEFAULT_AVERAGE_LAST:g} for E-LPIPS, whose one-sample steps are noisy; "
                             "0 for LPIPS and l2)")


def weights_report(metric: Metric) -> dict:
    """The metric as written into JSON outputs: its identity (name, weights' origin and digest, the full ensemble
    settings, precision; :meth:`elpips.Metric.identity`), whether it is calibrated, the seed of its own sampling
    generator, its device and memory budget."""
    identity = metric.identity()
    return {
        "metric": metric.name,
        "backbone_weights": identity["backbone_weights"],
        "backbone_weights_description": metric.weights_info.description,
        "calibrated": metric.calibrated,
        "linear_weights": identity["linear_weights"],
        "weights_sha256": identity["weights_sha256"],
        "precision": identity["precision"],
        "ensemble": identity["ensemble"],
        "ensemble_summary": metric.ensemble.summary(),
        "custom_ensemble": metric.custom_ensemble,
        "sampling_seed": metric.generator.initial_seed(),
        "device": str(metric.device),
        "memory_budget": metric.memory_budget,
        "elpips_version": elpips.__version__,
    }


def parse_crop(text: str | None, height: int, width: int) -> tuple[int, int, int, int] | None:
    """``"TOP,LEFT,HEIGHT,WIDTH"`` checked against an ``height x width`` image."""
    if text is None:
        return None
    try:
        top, left, crop_h, crop_w = (int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--crop must be TOP,LEFT,HEIGHT,WIDTH (four integers), got {text!r}") from None
    if min(top, left) < 0 or min(crop_h, crop_w) < 1 or top + crop_h > height or left + crop_w > width:
        raise ValueError(f"--crop {text} does not fit in the {height}x{width} (height x width) images")
    return top, left, crop_h, crop_w


def cropped(images: torch.Tensor, crop: tuple[int, int, int, int] | None) -> torch.Tensor:
    """``images[..., top:top + height, left:left + width]`` (all of them for ``crop=None``)."""
    if crop is None:
        return images
    top, left, height, width = crop
    return images[..., top:top + height, left:left + width].contiguous()


def progress_bar(description: str, total: int, unit: str = "sample", enabled: bool = True):
    """Progress on stderr: a tqdm bar on a terminal, plain periodic lines otherwise (used like a tqdm bar)."""
    from elpips.solver import ProgressReport

    return ProgressReport(description, total, unit=unit, enabled=enabled)


def default_run_dir(kind: str, root: str = "outputs") -> Path:
    """``outputs/<kind>-YYYYmmdd-HHMMSS`` (relative to the working directory)."""
    import time
    from pathlib import Path

    return Path(root) / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


def add_export_options(parser: argparse.ArgumentParser, defaults_from_log: bool = False) -> None:
    """``--row --scale --fps --pingpong/--no-pingpong`` (``None`` = keep the run's or use the default)."""
    keep = " (default: as in log.json)" if defaults_from_log else ""
    group = parser.add_argument_group("export", "the exported scanline plots and animations")
    group.add_argument("--row", type=int, default=None, help=f"scanline row{keep or ' (default: middle)'}")
    group.add_argument("--scale", type=int, default=None, help=f"enlargement of scanline plots{keep}")
    group.add_argument("--fps", type=float, default=None, help=f"animation frame rate (default: 8){keep}")
    group.add_argument("--pingpong", action=argparse.BooleanOptionalAction, default=None,
                       help=f"GIF plays forward and back (default: on){keep}")


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


def add_sizing_options(parser: argparse.ArgumentParser) -> None:
    """``--resize WxH | --fit smallest|largest`` and ``--center-crop``: inputs of different sizes to one size."""
    from elpips.sizing import FIT_CHOICES

    sizing = parser.add_argument_group("sizing", "inputs of different sizes to one size")
    group = sizing.add_mutually_exclusive_group()
    group.add_argument("--resize", default=None, metavar="WxH",
                       help="resample every input to WIDTHxHEIGHT pixels (antialiased bicubic)")
    group.add_argument("--fit", default=None, choices=FIT_CHOICES,
                       help="resample every input to the size of the smallest / largest one (fewest / most pixels)")
    sizing.add_argument("--center-crop", action="store_true",
                        help="with --resize/--fit: crop each input to the target's aspect ratio (centred) instead "
                             "of stretching it")


def sizing_from(args: argparse.Namespace):
    """The :class:`~elpips.sizing.Sizing` the options ask for (``ValueError`` naming the flag for a bad
    ``--resize`` or a ``--center-crop`` alone; argparse keeps ``--fit`` to its choices and apart from ``--resize``)."""
    from elpips.sizing import Sizing, parse_size

    if args.center_crop and not (args.resize or args.fit):
        raise ValueError("--center-crop needs --resize WxH or --fit smallest|largest")
    return Sizing(resize=parse_size(args.resize, "--resize") if args.resize else None, fit=args.fit,
                  center_crop=args.center_crop)


def _flag_wording() -> dict[str, str]:
    from elpips.sizing import SIZE_OPTIONS_HINT
    from elpips.weights import RANDOM_HINT

    return {
        RANDOM_HINT: "--backbone-weights random (uncalibrated, for smoke tests)",
        SIZE_OPTIONS_HINT: "pass --resize WxH or --fit smallest|largest to bring them to one size "
                           "(add --center-crop to keep the aspect ratio)",
        "backbone_weights=PATH": "--backbone-weights PATH",
    }


def error_message(error: BaseException) -> str:
    """``error``'s message as a command prints it. Library errors name Python arguments; the commands check their
    own flag values first where they can, and the library phrases they cannot pre-empt (inputs of different sizes,
    missing weights) are reworded here, in this one table, to name the flags."""
    message = str(error)
    for library, command_line in _flag_wording().items():
        message = message.replace(library, command_line)
    return message


def parse_categories(values: list[str] | None) -> list[str] | None:
    """``--categories a b`` or ``--categories a,b`` -> the names (``None`` when the option was not given)."""
    if values is None:
        return None
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    if not names:
        raise ValueError("--categories names no category")
    return names
