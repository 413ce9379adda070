"""Library errors name the Python arguments (``resize``, ``fit``, ``center_crop``, ``fps``, ``factor``,
``keyframes_per_window``, ``depth``, ``backbone_weights``), never the command-line flags; the commands speak of
their flags (tested with each command)."""

from __future__ import annotations

import urllib.error

import elpips
import imageio.v3 as iio
import numpy as np
import pytest
import torch
from elpips.clips import open_clip
from elpips.experiments.denoiser import ResidualCNN
from elpips.geodesics import plan_windows
from elpips.geodesics.clip import check_factor, check_keyframes_per_window
from elpips.sizing import SizeMismatchError, Sizing, conform_images, parse_size


def _message(build) -> str:
    with pytest.raises(ValueError) as caught:
        build()
    message = str(caught.value)
    assert "--" not in message, message
    return message


def test_parse_size_names_resize():
    assert _message(lambda: parse_size("x")).startswith("resize must be WIDTHxHEIGHT in pixels (e.g. 128x96)")
    assert _message(lambda: parse_size("0x4")).startswith("resize needs a positive width and height")


@pytest.mark.parametrize("build, expected", [
    (lambda: Sizing(resize=(4, 4), fit="smallest"), "resize and fit exclude each other"),
    (lambda: Sizing(fit="middle"), "fit must be one of smallest, largest, got 'middle'"),
    (lambda: Sizing(resize=(0, 4)), "resize needs a positive height and width"),
    (lambda: Sizing(center_crop=True), "center_crop=True needs resize=(height, width) or fit="),
])
def test_sizing_names_its_arguments(build, expected):
    assert _message(build).startswith(expected)


def test_size_mismatch_names_the_sizing_arguments():
    with pytest.raises(SizeMismatchError) as caught:
        conform_images([torch.rand(1, 3, 20, 30), torch.rand(1, 3, 40, 36)], ["s", "l"], Sizing())
    message = str(caught.value)
    assert "Sizing(resize=(height, width))" in message and "center_crop=True" in message and "--" not in message


def test_open_clip_names_fps(tmp_path):
    for index in range(2):
        iio.imwrite(tmp_path / f"frame{index}.png", np.zeros((8, 8, 3), dtype=np.uint8))
    assert _message(lambda: open_clip(str(tmp_path), fps=0)) == "fps must be > 0, got 0"


def test_clip_checks_name_factor_and_keyframes_per_window():
    assert _message(lambda: check_factor(1)).startswith("factor must be an integer >= 2")
    assert _message(lambda: check_keyframes_per_window(1)).startswith("keyframes_per_window must be an integer >= 2")
    assert _message(lambda: plan_windows(4, 1)).startswith("keyframes_per_window must be an integer >= 2")


def test_denoiser_names_depth():
    assert _message(lambda: ResidualCNN(depth=1)).startswith("depth must be >= 2")


def test_missing_weights_name_backbone_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    with pytest.raises(elpips.WeightsUnavailableError) as caught:
        elpips.Metric("elpips-vgg", backbone_weights="imagenet", device="cpu")
    message = str(caught.value)
    assert "backbone_weights=PATH" in message and "--" not in message
