"""Inputs of different sizes: the antialiased resampler against Pillow, centre crops, the options of the
barycenter and geodesic commands, and the one-line error without them."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from elpips.scripts.cli import main
from elpips.sizing import SizeMismatchError, Sizing, center_crop_box, conform_images, parse_size, resample
from PIL import Image


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255


@pytest.mark.parametrize("height, width", [(20, 28), (13, 17), (40, 30)])
def test_downscaling_matches_pillow_bicubic(height, width):
    """Pillow's BICUBIC resize is antialiased (its kernel widens with the scale); ours must agree to 1 level."""
    image = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
    peer = np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC)).astype(np.float64)
    ours = resample(_as_tensor(image), height, width)[0].permute(1, 2, 0).double().numpy() * 255
    assert np.abs(peer - ours).max() <= 1.0
    plain = torch.nn.functional.interpolate(_as_tensor(image), size=(height, width), mode="bicubic",
                                            align_corners=False).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255
    assert np.abs(peer - plain).max() > 5  # without antialiasing the result is far from Pillow's: the test can fail


def test_antialiasing_averages_a_fine_checkerboard():
    checker = (np.indices((32, 32)).sum(0) % 2).astype(np.float32)
    image = torch.from_numpy(checker)[None, None].expand(1, 3, 32, 32)
    halved = resample(image, 8, 8)
    assert (halved - 0.5).abs().max() < 0.02  # a 1-px pattern has no place at 1/4 of the resolution


def test_same_size_is_untouched_and_center_crop_keeps_the_middle():
    image = torch.rand(1, 3, 24, 40, generator=torch.Generator().manual_seed(0))
    assert resample(image, 24, 40) is image
    assert center_crop_box(24, 40, 12, 12) == (0, 8, 24, 24)
    assert center_crop_box(40, 24, 10, 20) == (14, 0, 12, 24)
    cropped = resample(image, 24, 24, center_crop=True)
    assert torch.equal(cropped, image[..., 8:32])  # the crop is already the target size: no resampling
    stretched = resample(image, 24, 24)
    assert not torch.allclose(stretched, cropped)


def test_conform_images_targets_and_record():
    small, large = torch.rand(1, 3, 20, 30), torch.rand(1, 3, 40, 36)
    images, record = conform_images([small, large], ["s", "l"], Sizing(fit="smallest"))
    assert images.shape == (2, 3, 20, 30) and torch.equal(images[0], small[0])
    assert record["size_height_width"] == [20, 30] and record["resized_inputs"] == 1
    assert record["input_sizes_height_width"] == [[20, 30], [40, 36]] and "antialiased" in record["resampler"]
    images, _ = conform_images([small, large], ["s", "l"], Sizing(fit="largest", center_crop=True))
    assert images.shape == (2, 3, 40, 36)
    images, _ = conform_images([small, large], ["s", "l"], Sizing(resize=parse_size("16x12")))
    assert images.shape == (2, 3, 12, 16)
    api_hint = r"Sizing\(resize=\(height, width\)\) or Sizing\(fit='smallest'\|'largest'\)"
    with pytest.raises(SizeMismatchError, match=api_hint):
        conform_images([small, large], ["s", "l"], Sizing())


@pytest.mark.parametrize("build, message", [
    (lambda: parse_size("12"), "WIDTHxHEIGHT"),
    (lambda: parse_size("0x4"), "positive"),
    (lambda: Sizing(center_crop=True), "center_crop=True needs"),
    (lambda: Sizing(fit="middle"), "fit must be one of"),
    (lambda: Sizing(resize=(4, 4), fit="smallest"), "exclude each other"),
])
def test_bad_sizing_options(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_resize_over_the_pixel_limit_is_refused_when_made():
    import elpips.io

    with pytest.raises(ValueError) as caught:
        Sizing(resize=parse_size("100000x100000"))
    assert str(caught.value) == ("resize to 100000x100000 = 10,000,000,000 pixels is over the limit of 40,000,000 "
                                 "pixels (max_pixels)")
    with elpips.io.pixel_limit(10**10):
        assert Sizing(resize=parse_size("100000x100000")).resize == (100000, 100000)
    with elpips.io.pixel_limit(100), pytest.raises(ValueError, match="resize to 11x10 = 110 pixels"):
        Sizing(resize=(10, 11))


@pytest.mark.parametrize("command, arguments", [
    ("geodesic", ["{tmp}/missing-a.png", "{tmp}/missing-b.png", "--frames", "3"]),
    ("barycenter", ["{tmp}/missing-a.png", "{tmp}/missing-b.png"]),
    ("barycenter", ["{tmp}/missing-a.png", "--perturb", "noise"]),
    ("interpolate", ["{tmp}/missing.mp4", "--factor", "2"]),
])
def test_resize_over_the_pixel_limit_fails_before_any_input_is_read(tmp_path, capsys, command, arguments):
    """The inputs do not exist: the --resize error must come first, in one line, with nothing written."""
    filled = [argument.format(tmp=tmp_path) for argument in arguments]
    assert main([command, *filled, "--metric", "l2", "--steps", "1", "--resize", "100000x100000", "--max-pixels",
                 "5000000000", "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == (f"elpips {command}: error: resize to 100000x100000 = 10,000,000,000 pixels "
                                       "is over the limit of 5,000,000,000 pixels (max_pixels)\n")
    assert not (tmp_path / "run").exists()


@pytest.fixture
def mixed(tmp_path):
    """Two images of different sizes and aspect ratios."""
    rng = np.random.default_rng(3)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    iio.imwrite(a, (rng.random((32, 40, 3)) * 255).astype(np.uint8))
    iio.imwrite(b, (rng.random((48, 36, 3)) * 255).astype(np.uint8))
    return str(a), str(b)


@pytest.mark.parametrize("command", ["geodesic", "barycenter"])
def test_mismatched_sizes_are_one_error_naming_the_options(mixed, tmp_path, capsys, command):
    extra = ["--frames", "3"] if command == "geodesic" else []
    assert main([command, *mixed, "--metric", "l2", "--steps", "1", *extra, "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"elpips {command}: error: images must have the same size")
    assert "--resize WxH or --fit smallest|largest" in error and "--center-crop" in error


def test_geodesic_and_barycenter_resize_and_record_it(mixed, tmp_path):
    out = tmp_path / "geo"
    assert main(["geodesic", *mixed, "--metric", "l2", "--steps", "1", "--frames", "3", "--samples", "1",
                 "--fit", "smallest", "--center-crop", "--seed", "0", "--out", str(out)]) == 0
    log = json.loads((out / "log.json").read_text())
    assert log["size"] == [32, 40] and log["sizing"]["fit"] == "smallest" and log["sizing"]["center_crop"]
    assert log["sizing"]["input_sizes_height_width"] == [[32, 40], [48, 36]]
    assert np.array_equal(iio.imread(out / "frames/frame_000.png"), iio.imread(mixed[0]))  # the smaller: as is
    out = tmp_path / "bary"
    assert main(["barycenter", *mixed, "--metric", "l2", "--steps", "2", "--resize", "24x16", "--seed", "0",
                 "--eval-samples", "1", "--out", str(out)]) == 0
    log = json.loads((out / "log.json").read_text())
    assert log["inputs"]["sizing"]["size_height_width"] == [16, 24]
    assert iio.imread(out / "barycenter.png").shape == (16, 24, 3)
