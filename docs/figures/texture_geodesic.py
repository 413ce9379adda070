"""Make ``docs/texture_geodesic.png`` (docs/texture-morphing.md): a ``--tileable`` geodesic between two procedural
textures on the seeded random backbone, its frames in a strip and its middle frame tiled 2 x 2.

Run from the repository root: ``python docs/figures/texture_geodesic.py`` (about a minute on a CPU).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from elpips.io import load_image, save_image
from elpips.scripts.cli import main
from elpips.scripts.render.figures import column, labelled, row, tile
from elpips.textures import procedural_texture, seam_statistic, tiled

SIZE, FRAMES, STEPS, SCALE = 32, 5, 20, 3
OUT = Path(__file__).resolve().parents[1] / "texture_geodesic.png"


def make(out: Path = OUT) -> Path:
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        save_image(work / "a.png", procedural_texture(SIZE, SIZE, seed=1))
        save_image(work / "b.png", procedural_texture(SIZE, SIZE, seed=2))
        code = main(["geodesic", str(work / "a.png"), str(work / "b.png"), "--tileable", "--frames", str(FRAMES),
                     "--steps", str(STEPS), "--backbone-weights", "random", "--samples", "2", "--seed", "0",
                     "--out", str(work / "run")])
        if code:
            sys.exit(code)
        frames = [load_image(path) for path in sorted((work / "run" / "frames").glob("frame_*.png"))]
    seams = [float(seam_statistic(frame)[0]) for frame in frames]
    strip = row([labelled(tile(frame, SCALE), f"{index}: seam {seam:.2f}")
                 for index, (frame, seam) in enumerate(zip(frames, seams, strict=True))])
    middle = FRAMES // 2
    preview = labelled(tile(tiled(frames[middle])[0], SCALE), f"frame {middle} tiled 2 x 2")
    figure = column([labelled(strip, "tileable geodesic, random backbone (uncalibrated)"), preview])
    save_image(out, np.ascontiguousarray(figure))
    return out


if __name__ == "__main__":
    print(f"wrote {make()}")
