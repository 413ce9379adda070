"""The ``elpips`` command: a thin, lazy dispatcher over subcommand modules.

Each subcommand lives in its own module in this package with two functions: ``register(subparsers)`` adds its
parser (and sets ``handler=run``), ``run(args) -> int`` does the work. :data:`COMMAND_MODULES` names each
command's module and one line of help; only the module of the command being run is imported, so
``elpips distance`` loads neither the benchmark suite nor the training or batch code. To add a command, write
the module and list it in :data:`COMMAND_MODULES`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from elpips import __version__
from elpips.io import ImageLoadError, OutputWriteError
from elpips.weights import WeightsUnavailableError

from .common import command_settings, error_message

COMMAND_MODULES: dict[str, tuple[str, str]] = {
    "distance": ("distance", "distance between two images"),
    "compare": ("compare", "which of several candidates is closest to a reference"),
    "examples": ("examples", "list the shipped example images (or make a test clip from one)"),
    "barycenter": ("barycenter", "perceptual barycenter (average) of several images"),
    "attack": ("attack", "adversarial attacks A1 (pull toward a target) and A2 (push away under a budget)"),
    "2afc": ("twoafc", "agreement with human judgements on the BAPPS 2AFC data"),
    "geodesic": ("geodesic", "perceptual geodesic (interpolation / morph) between images"),
    "interpolate": ("interpolate", "frame interpolation of a clip (video, GIF, frames) along geodesics"),
    "export": ("export", "re-render the exports of a saved geodesic run"),
    "bench": ("bench", "benchmark the metric and the solver steps (paired timing ratios)"),
    "check-device": ("check_device", "check the metric's numbers on a device (GPU) against float64 on the CPU"),
    "train-example": ("train_example", "train a small denoiser/deblurrer with L2, LPIPS or E-LPIPS as the loss"),
    "train-weights": ("train_weights", "learn a metric's linear weights from 2AFC judgements (BAPPS layout)"),
    "batch": ("batch", "run a JSON-lines file of geodesic/barycenter/distance/interpolate jobs (sharded under "
                       "torchrun)"),
}
"""Command name -> (module in :mod:`elpips.scripts`, one line of help for ``elpips --help``)."""

EXIT_USAGE = 2
"""Exit code for bad input of any kind (argparse uses 2 for usage errors too)."""

EXIT_OUT_OF_MEMORY = 3
"""Exit code when the machine ran out of memory (CPU or GPU)."""


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _is_out_of_memory(error: BaseException) -> bool:
    """CPU allocation failures (``MemoryError``, torch's "can't allocate memory") and CUDA/MPS out-of-memory."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error).lower()
    return "out of memory" in text or "can't allocate memory" in text or "failed to allocate" in text


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every command's ``--help``: each option's default shown as ``(default: X)`` after its help, so that help
    strings never type it. Not for a default of ``None`` (the help says in words what happens then) nor for an
    on/off switch's ``False``."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        switch = action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction)
        if action.default is None or action.default is False or switch:
            return action.help
        return super()._get_help_string(action)


class OneLineErrorParser(argparse.ArgumentParser):
    """Usage errors as one line with a pointer to ``--help`` (argparse prints the whole usage block); the
    subcommand parsers inherit it, and its :class:`HelpFormatter`."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def command_module(name: str) -> ModuleType:
    """The module of command ``name`` (imported now)."""
    return importlib.import_module(f"elpips.scripts.{COMMAND_MODULES[name][0]}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``elpips`` parser: every command listed with its help; only ``command``'s own parser is built (which
    imports its module)."""
    parser = OneLineErrorParser(
        prog="elpips",
        description="E-LPIPS perceptual distances, barycenters and geodesics.",
    )
    parser.add_argument("--version", action="version", version=f"elpips {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name, (_, summary) in COMMAND_MODULES.items():
        if name == command:
            command_module(name).register(_WithHelp(subparsers, summary))
        else:
            subparsers.add_parser(name, help=summary, add_help=False)
    return parser


class _WithHelp:
    """``subparsers`` for one command's ``register``: its parser gets the one line of help from the table."""

    def __init__(self, subparsers: argparse._SubParsersAction, summary: str) -> None:
        self.subparsers, self.summary = subparsers, summary

    def add_parser(self, name: str, **options) -> argparse.ArgumentParser:
        options.setdefault("formatter_class", HelpFormatter)
        return self.subparsers.add_parser(name, help=self.summary, **options)


def requested_command(argv: list[str]) -> str | None:
    """The command named in ``argv`` (the first argument that is not an option), if it is one."""
    first = next((argument for argument in argv if not argument.startswith("-")), None)
    return first if first in COMMAND_MODULES else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(requested_command(argv)).parse_args(argv)
    args.argv = argv  # the command line, for the resume hint of interrupted runs
    try:
        with command_settings(args):
            return int(args.handler(args) or 0)
    except (ImageLoadError, OutputWriteError, WeightsUnavailableError, ValueError, FileNotFoundError) as error:
        print(f"elpips {args.command}: error: {error_message(error)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:  # a write outside a run folder (export, batch outputs): the file and the cause
        where = f" ('{error.filename}')" if error.filename else ""
        print(f"elpips {args.command}: error: {error.strerror or error}{where}", file=sys.stderr)
        return EXIT_USAGE
    except (MemoryError, RuntimeError) as error:
        if not _is_out_of_memory(error):
            raise
        print(f"elpips {args.command}: error: out of memory ({_first_line(error)}); lower --memory-budget, "
              f"or use smaller images, fewer frames or a smaller batch", file=sys.stderr)
        return EXIT_OUT_OF_MEMORY
    except KeyboardInterrupt:
        print(f"elpips {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
