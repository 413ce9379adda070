"""Image loading (bit depths, channels, errors) and the distance/compare command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from elpips.io import ImageLoadError, load_image, load_images, save_image, write_json
from elpips.scripts.cli import main
from pngwriter import write_png16


def write_png(path, array):
    iio.imwrite(path, array)
    return str(path)


@pytest.fixture
def pngs(tmp_path):
    rng = np.random.default_rng(0)
    a = write_png(tmp_path / "a.png", rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    b = write_png(tmp_path / "b.png", rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    return tmp_path, a, b


def test_bit_depths_and_channel_layouts(tmp_path):
    rng = np.random.default_rng(1)
    rgb16 = rng.integers(0, 65536, (20, 24, 3), dtype=np.uint16)
    loaded = load_image(write_png16(tmp_path / "rgb16.png", rgb16))
    np.testing.assert_allclose(loaded[0].permute(1, 2, 0).numpy(), rgb16 / 65535.0, rtol=0, atol=1e-7)
    grey16 = rng.integers(0, 65536, (20, 24), dtype=np.uint16)
    loaded = load_image(write_png16(tmp_path / "grey16.png", grey16))
    np.testing.assert_allclose(loaded[0, 2].numpy(), grey16 / 65535.0, rtol=0, atol=1e-7)
    rgba16 = rng.integers(0, 65536, (20, 24, 4), dtype=np.uint16)
    loaded = load_image(write_png16(tmp_path / "rgba16.png", rgba16))
    np.testing.assert_allclose(loaded[0].permute(1, 2, 0).numpy(), rgba16[:, :, :3] / 65535.0, atol=1e-7)
    grey = rng.integers(0, 256, (20, 24), dtype=np.uint8)
    loaded = load_image(write_png(tmp_path / "grey.png", grey))
    assert loaded.shape == (1, 3, 20, 24)
    for channel in range(3):
        np.testing.assert_allclose(loaded[0, channel].numpy(), grey / 255.0, atol=1e-7)
    rgba = rng.integers(0, 256, (20, 24, 4), dtype=np.uint8)
    loaded = load_image(write_png(tmp_path / "rgba.png", rgba))
    np.testing.assert_allclose(loaded[0].permute(1, 2, 0).numpy(), rgba[:, :, :3] / 255.0, atol=1e-7)
    grey_alpha = rng.integers(0, 256, (20, 24, 2), dtype=np.uint8)
    loaded = load_image(write_png(tmp_path / "la.png", grey_alpha))
    np.testing.assert_allclose(loaded[0, 1].numpy(), grey_alpha[:, :, 0] / 255.0, atol=1e-7)


def test_load_errors(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "missing.png")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageLoadError, match="cannot be read as an image"):
        load_image(corrupt)
    small = write_png(tmp_path / "small.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ImageLoadError, match="at least 16x16"):
        load_image(small, min_size=16)
    other = write_png(tmp_path / "other.png", np.zeros((20, 30, 3), np.uint8))
    first = write_png(tmp_path / "first.png", np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(ImageLoadError, match="same size"):
        load_images([first, other])
    with pytest.raises(ImageLoadError, match="no example image"):
        load_image("example:unicorn")


def test_examples_ship_with_the_package():
    cat = load_image("example:cat")
    assert cat.shape == (1, 3, 150, 240) and cat.min() >= 0 and cat.max() <= 1


def test_atomic_writes_leave_no_partial_file(tmp_path):
    target = tmp_path / "out" / "image.png"
    save_image(target, torch.rand(3, 8, 8))
    assert iio.imread(target).shape == (8, 8, 3)
    write_json(tmp_path / "out" / "log.json", {"a": 1})
    assert json.loads((tmp_path / "out" / "log.json").read_text()) == {"a": 1}
    with pytest.raises(TypeError):
        write_json(tmp_path / "out" / "bad.json", {"a": object()})
    assert sorted(os.listdir(tmp_path / "out")) == ["image.png", "log.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert (target.stat().st_mode & 0o777) == 0o666 & ~umask  # not mkstemp's 0600


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_distance_text_and_json(capsys, pngs):
    _, a, b = pngs
    code, out, err = run_cli(capsys, "distance", a, b, "--backbone-weights", "random", "--samples", "4",
                             "--seed", "1")
    assert code == 0 and "±" in out and "95% CI, 4 samples" in out and "UNCALIBRATED" in out
    assert "UNCALIBRATED" in err
    code, out, _ = run_cli(capsys, "distance", a, b, "--backbone-weights", "random", "--samples", "4",
                           "--seed", "1", "--json")
    result = json.loads(out)
    assert code == 0 and result["samples"] == 4 and result["calibrated"] is False
    assert result["distance"] > 0 and result["half_width_95"] > 0
    # the same seed gives the same number as the Python API
    import elpips

    metric = elpips.Metric("elpips-vgg", backbone_weights="random", seed=1, device="cpu")
    x, y = load_image(a), load_image(b)
    assert result["distance"] == pytest.approx(metric(x, y, n=4).item(), rel=1e-5)


def test_distance_auto_and_lpips(capsys, pngs):
    _, a, b = pngs
    code, out, _ = run_cli(capsys, "distance", a, b, "--backbone-weights", "random", "--auto",
                           "--rel-tol", "0.2", "--abs-tol", "0.05", "--json")
    result = json.loads(out)
    assert code == 0 and result["half_width_95"] <= 0.2 * result["distance"] + 1e-12
    code, out, _ = run_cli(capsys, "distance", a, b, "--metric", "lpips-vgg", "--backbone-weights", "random")
    assert code == 0 and "±" not in out


def test_compare_picks_the_closest(capsys, pngs, tmp_path):
    _, a, b = pngs
    near = np.clip(iio.imread(a).astype(int) + 3, 0, 255).astype(np.uint8)
    near_path = write_png(tmp_path / "near.png", near)
    code, out, _ = run_cli(capsys, "compare", a, b, near_path, "--backbone-weights", "random", "--samples", "6",
                           "--json")
    result = json.loads(out)
    assert code == 0 and result["closest"] == near_path
    assert result["margin"]["difference"] > result["margin"]["half_width_95"]
    code, out, _ = run_cli(capsys, "compare", a, b, near_path, "--backbone-weights", "random", "--samples", "6")
    assert "<- closest" in out and near_path in out.split("<- closest")[0].splitlines()[-1]


@pytest.mark.parametrize("case,message", [
    ("missing", "no such file"),
    ("corrupt", "cannot be read as an image"),
    ("size", "same size"),
    ("small", "at least 16x16"),
    ("weights", "does not exist"),
    ("float_nan", "NaN or Inf"),
])
def test_cli_bad_inputs_exit_2(capsys, pngs, case, message):
    tmp_path, a, b = pngs
    args = ["distance", a, b, "--backbone-weights", "random", "--samples", "1"]
    if case == "missing":
        args[2] = str(tmp_path / "missing.png")
    elif case == "corrupt":
        (tmp_path / "corrupt.png").write_bytes(b"garbage")
        args[2] = str(tmp_path / "corrupt.png")
    elif case == "size":
        args[2] = write_png(tmp_path / "wide.png", np.zeros((40, 60, 3), np.uint8))
    elif case == "small":
        args[1] = write_png(tmp_path / "s1.png", np.zeros((8, 8, 3), np.uint8))
        args[2] = write_png(tmp_path / "s2.png", np.zeros((8, 8, 3), np.uint8))
    elif case == "weights":
        args[4] = str(tmp_path / "none.pth")
    elif case == "float_nan":
        array = np.full((40, 48, 3), np.nan, dtype=np.float32)
        iio.imwrite(tmp_path / "nan.tiff", array)
        args[2] = str(tmp_path / "nan.tiff")
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and out == ""
    assert message in err and err.startswith("elpips distance: error:")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("seed", [str(2**64), str(2**63), "-1", "seven"])
def test_seed_out_of_range_is_a_usage_error(capsys, pngs, seed):
    _, a, b = pngs
    with pytest.raises(SystemExit) as info:
        main(["distance", a, b, "--metric", "l2", "--seed", seed])
    captured = capsys.readouterr()
    assert info.value.code == 2 and captured.out == ""
    assert captured.err.startswith("elpips distance: error: argument --seed: must be an integer in 0 .. 2**63 - 1, "
                                   f"got '{seed}'")
    assert len(captured.err.strip().splitlines()) == 1


def test_largest_seed_is_accepted(capsys, pngs):
    _, a, b = pngs
    code, out, _ = run_cli(capsys, "distance", a, b, "--metric", "elpips-squeeze", "--backbone-weights", "random",
                           "--samples", "1", "--seed", str(2**63 - 1), "--json")
    assert code == 0 and json.loads(out)["samples"] == 1


def test_unknown_metric_is_usage_error(capsys, pngs):
    _, a, b = pngs
    with pytest.raises(SystemExit) as info:
        main(["distance", a, b, "--metric", "elpips-alex"])
    assert info.value.code == 2


def test_module_entry_point(pngs):
    _, a, b = pngs
    result = subprocess.run([sys.executable, "-m", "elpips", "distance", a, b, "--backbone-weights", "random",
                             "--samples", "2", "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["samples"] == 2


def test_huge_image_on_the_command_line_is_only_our_error_line(pngs):
    """A header claiming 10000x10000 pixels: no Pillow DecompressionBombWarning before the one-line refusal."""
    import struct
    import zlib

    tmp_path, a, _ = pngs

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    huge = tmp_path / "huge.png"
    huge.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 10000, 10000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))
    result = subprocess.run([sys.executable, "-W", "default", "-m", "elpips", "distance", a, str(huge), "--metric",
                             "l2"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"elpips distance: error: {huge}: image is 10000x10000 = 100,000,000 pixels, over the "
                             "limit of 40,000,000 pixels (max_pixels)\n")
