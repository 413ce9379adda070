"""``elpips examples``: list the example images shipped with the package."""

from __future__ import annotations

import argparse

from elpips.io import EXAMPLES_DIR, example_names


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("examples", description="List the example images; use them as example:NAME.")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    for name in example_names():
        print(f"example:{name}\t{EXAMPLES_DIR / (name + '.png')}")
    print(f"licences: {EXAMPLES_DIR / 'LICENSE.txt'}")
    return 0
