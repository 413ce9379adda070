"""The ``elpips`` command: a thin dispatcher over subcommand modules.

Each subcommand lives in its own module in this package with two functions: ``register(subparsers)`` adds its
parser (and sets ``handler=run``), ``run(args) -> int`` does the work. To add a command, write the module and
list it in :data:`COMMAND_MODULES`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from elpips import __version__
from elpips.io import ImageLoadError, OutputWriteError
from elpips.weights import WeightsUnavailableError

from .common import apply_pixel_limit

COMMAND_MODULES = [
    "distance",
    "compare",
    "examples",
    "barycenter",
    "attack",
    "twoafc",
    "geodesic",
    "interpolate",
    "export",
    "bench",
    "device_check",
    "train_example",
    "batch",
]

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


class OneLineErrorParser(argparse.ArgumentParser):
    """Usage errors as one line with a pointer to ``--help`` (argparse prints the whole usage block); the
    subcommand parsers inherit it."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="elpips",
        description="E-LPIPS perceptual distances, barycenters and geodesics.",
    )
    parser.add_argument("--version", action="version", version=f"elpips {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"elpips.scripts.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        apply_pixel_limit(args)
        return int(args.handler(args) or 0)
    except (ImageLoadError, OutputWriteError, WeightsUnavailableError, ValueError, FileNotFoundError) as error:
        print(f"elpips {args.command}: error: {error}", file=sys.stderr)
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
