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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
        return int(args.handler(args) or 0)
    except (ImageLoadError, OutputWriteError, WeightsUnavailableError, ValueError, FileNotFoundError) as error:
        print(f"elpips {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"elpips {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
