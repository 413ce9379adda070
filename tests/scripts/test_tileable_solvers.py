"""The solvers in the tileable mode: the L2 path stays the cross-fade, texture paths and barycenters tile."""

from __future__ import annotations

import json

import elpips
import numpy as np
import pytest
import torch
from elpips import EnsembleConfig
from elpips.geodesics import linear_path
from elpips.io import load_image, save_image
from elpips.scripts.cli import main
from elpips.textures import procedural_texture, seam_statistic

SHARED = ["--backbone-weights", "random", "--seed", "3", "--device", "cpu"]
LIMIT = 1.3


@pytest.fixture
def textures(tmp_path):
    paths = []
    for seed in (1, 2):
        path = tmp_path / f"texture{seed}.png"
        save_image(path, procedural_texture(32, 32, seed=seed))
        paths.append(str(path))
    return paths


def test_l2_tileable_geodesic_is_the_cross_fade():
    keys = torch.cat([procedural_texture(32, 32, seed=1), procedural_texture(32, 32, seed=2)])
    metric = elpips.Metric("l2", ensemble=EnsembleConfig.none().updated(tileable=True))
    for spatial in (False, True):  # spatial: the stages lift the path on the torus
        result = elpips.geodesics.solve(keys, metric, frames=5, steps=4, spatial=spatial)
        # the blend is the optimum: a few Adam steps on float-rounding gradients move it by a few 1e-3 at most
        assert (result.frames - linear_path(keys, [4])).abs().max() <= 5e-3
        assert torch.equal(result.frames[[0, 4]], keys)
        expected = float((keys[0] - keys[1]).square().mean().sqrt()) / 4
        assert torch.allclose(result.distances, torch.full((4,), expected), rtol=1e-2)


def test_tileable_geodesic_frames_tile(textures, tmp_path):
    out = tmp_path / "geo"
    assert main(["geodesic", *textures, *SHARED, "--tileable", "--frames", "5", "--steps", "6", "--samples", "2",
                 "--out", str(out)]) == 0
    seams = json.loads((out / "log.json").read_text())["result"]["seam_statistic"]
    assert len(seams) == 5 and max(seams) < LIMIT, seams
    frames = torch.cat([load_image(out / "frames" / f"frame_{index:03d}.png") for index in range(5)])
    np.testing.assert_allclose(seam_statistic(frames).numpy(), seams, atol=0.05)  # the PNGs: 8-bit rounding


def test_tileable_barycenter_tiles(textures, tmp_path):
    out = tmp_path / "bary"
    assert main(["barycenter", *textures, *SHARED, "--tileable", "--steps", "6", "--eval-samples", "2",
                 "--out", str(out)]) == 0
    log = json.loads((out / "log.json").read_text())
    assert log["ensemble"]["tileable"] is True
    assert log["seam_statistic"]["barycenter"] < LIMIT and max(log["seam_statistic"]["inputs"]) < LIMIT
    assert seam_statistic(load_image(out / "barycenter.png")).item() < LIMIT
