"""``elpips examples``: list the example images shipped with the package, or make a test clip from one
(``--pan NAME --out DIR``: a camera pan over it, as numbered PNG frames)."""

from __future__ import annotations

import argparse
from pathlib import Path

from elpips.clips import pan_frames
from elpips.io import EXAMPLES_DIR, example_names, load_image, save_image

from .common import positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("examples",
                                   description="List the example images; use them as example:NAME. With --pan NAME "
                                               "--out DIR, write a camera pan over one of them as frame PNGs (a "
                                               "clip for elpips interpolate).")
    parser.add_argument("--pan", default=None, metavar="NAME", help="make a pan clip over example:NAME")
    parser.add_argument("--frames", type=positive_int, default=5, help="--pan: frames of the clip")
    parser.add_argument("--size", type=positive_int, default=64, help="--pan: side of the square frames")
    parser.add_argument("--out", default=None, metavar="DIR", help="--pan: folder for the frames")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.pan is not None:
        if args.out is None:
            raise ValueError("--pan needs --out DIR (the folder for the frames)")
        frames = pan_frames(load_image(f"example:{args.pan}"), args.frames, args.size)
        for index, frame in enumerate(frames):
            save_image(Path(args.out) / f"frame_{index:03d}.png", frame)
        print(f"wrote {len(frames)} frames of {args.size}x{args.size} px (a pan over example:{args.pan}) to "
              f"{args.out}/")
        return 0
    for name in example_names():
        print(f"example:{name}\t{EXAMPLES_DIR / (name + '.png')}")
    print(f"licences: {EXAMPLES_DIR / 'LICENSE.txt'}")
    return 0
