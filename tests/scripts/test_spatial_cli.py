"""Distance maps on the command line: ``distance --map/--map-raw``, ``compare --maps``, ``geodesic --maps``;
the colour map, raw files and bad input (one line, exit 2, nothing written)."""

from __future__ import annotations

import json

import elpips
import imageio.v3 as iio
import numpy as np
import pytest
import torch
from elpips.io import load_image
from elpips.scripts.cli import main
from elpips.scripts.render import heatmaps
from elpips.spatial import distance_map
from PIL import Image

RANDOM = ["--backbone-weights", "random", "--seed", "0"]


@pytest.fixture
def pair(tmp_path):
    """Two 40 x 48 PNGs that differ only in a 10 x 10 patch."""
    rng = np.random.default_rng(0)
    a = (np.linspace(0, 200, 48)[None, :, None] + np.zeros((40, 1, 3))).astype(np.uint8)
    b = a.copy()
    b[8:18, 30:40] = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "a.png", a)
    iio.imwrite(tmp_path / "b.png", b)
    return tmp_path, str(tmp_path / "a.png"), str(tmp_path / "b.png")


def test_colormap_lightness_rises_evenly():
    """Relative luminance (a proxy of lightness) rises monotonically over the 256 entries, in nearly equal steps
    of L* (to 8-bit rounding); the ends are dark violet and bright yellow-green."""
    rgb = heatmaps.COLORMAP.astype(np.float64) / 255
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    luminance = linear @ np.array([0.2126, 0.7152, 0.0722])
    lightness = np.where(luminance > (6 / 29) ** 3, 116 * np.cbrt(luminance) - 16, luminance * (29 / 3) ** 3)
    assert heatmaps.COLORMAP.shape == (256, 3) and (np.diff(lightness) >= 0).all()  # 8-bit rounding: ties
    assert abs(lightness[0] - 15) < 1.5 and abs(lightness[-1] - 95) < 1.5
    steps = np.diff(lightness[::15])  # 17 stops
    assert steps.min() > 0.85 * steps.mean() and steps.max() < 1.15 * steps.mean()
    assert heatmaps.COLORMAP[0, 2] > heatmaps.COLORMAP[0, 1] and heatmaps.COLORMAP[-1, 0] > heatmaps.COLORMAP[-1, 2]


def test_distance_map_figure_raw_files_and_same_samples(pair, capsys):
    folder, a, b = pair
    figure, raw, tiff = folder / "map.png", folder / "map.npy", folder / "map.tiff"
    assert main(["distance", a, b, *RANDOM, "--samples", "4", "--map", str(figure), "--map-raw", str(raw),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    values = np.load(raw)
    assert values.shape == (40, 48) and values.dtype == np.float32 and values.min() >= 0
    assert report["map"] == str(figure) and report["map_samples"] == 4
    assert report["distance"] == pytest.approx(float(values.mean()), rel=1e-5)  # same samples
    metric = elpips.Metric("elpips-vgg", backbone_weights="random", device="cpu", seed=0)
    x, y = load_image(a), load_image(b)
    with torch.no_grad():
        expected = distance_map(metric, x, y, 4).map[0, 0].numpy()
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-8)
    picture = iio.imread(figure)
    assert picture.ndim == 3 and picture.shape[1] > 4 * 48  # four panels and a colour bar
    assert main(["distance", a, b, *RANDOM, "--metric", "lpips-vgg", "--map-raw", str(tiff)]) == 0
    assert "wrote" in capsys.readouterr().out
    with Image.open(tiff) as image:
        assert image.mode == "F" and image.size == (48, 40)
        assert np.asarray(image).max() > 0
    assert not list(folder.glob(".*tmp*"))


def test_compare_maps_one_per_candidate(pair, capsys):
    folder, a, b = pair
    out = folder / "maps"
    assert main(["compare", a, b, a, *RANDOM, "--samples", "3", "--maps", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [p.split("/")[-1] for p in report["maps"]] == ["00_b.png", "01_a.png"]
    changed, same = np.load(out / "00_b.npy"), np.load(out / "01_a.npy")
    assert same.max() == 0 and changed.max() > 0
    assert report["candidates"][0]["distance"] == pytest.approx(float(changed.mean()), rel=1e-5)
    inside = changed[:26, 22:].sum() / changed.sum()  # the patch (rows 8-17, columns 30-39) dilated by 8 px
    assert inside > 0.6, inside


def test_geodesic_maps_in_the_viewer(pair, capsys):
    folder, a, b = pair
    out = folder / "run"
    assert main(["geodesic", a, b, "--backbone-weights", "random", "--frames", "4", "--samples", "2", "--seed",
                 "1", "--steps", "2", "--maps", "--out", str(out)]) == 0
    log = json.loads((out / "log.json").read_text())
    segments = log["files"]["maps"]["segments"]
    assert len(segments) == 3 and all((out / name).is_file() for name in segments)
    values = np.load(out / "maps" / "values.npy")
    assert values.shape == (3, 40, 48) and log["maps"]["max"] == pytest.approx(float(values.max()))
    html = (out / "index.html").read_text()
    assert "Where consecutive frames change" in html and "maps/segment_000.png" in html
    assert main(["export", str(out)]) == 0  # re-rendering keeps the maps in the viewer
    assert "maps/segment_002.png" in (out / "index.html").read_text()


@pytest.mark.parametrize("arguments,message", [
    (["--metric", "l2", "--map", "{folder}/m.png"], "need an LPIPS or E-LPIPS metric"),
    (["--map-raw", "{folder}/m.exr"], "must end in .npy, .tif, .tiff"),
    (["--map", "{folder}/missing/m.png"], "does not exist"),
])
def test_bad_map_arguments_fail_cleanly(pair, capsys, arguments, message):
    folder, a, b = pair
    before = sorted(folder.iterdir())
    arguments = [part.replace("{folder}", str(folder)) for part in arguments]
    assert main(["distance", a, b, *RANDOM, *arguments]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0]
    assert sorted(folder.iterdir()) == before
