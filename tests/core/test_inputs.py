"""Inputs as users give them: image files decoded as a viewer shows them (EXIF orientation, CMYK and palette
images), tensors of any float precision, sample counts checked."""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import warnings
import zlib

import elpips
import elpips.io
import numpy as np
import pytest
import torch
from elpips.io import ImageLoadError, load_image
from elpips.validation import check_positive_int
from PIL import Image


def _pattern(height: int = 24, width: int = 40) -> np.ndarray:
    rows = np.linspace(0, 255, height)[:, None]
    columns = np.linspace(0, 255, width)[None, :]
    return np.stack([rows + 0 * columns, 0 * rows + columns, np.full((height, width), 200.0)], -1).astype(np.uint8)


def _loaded(path) -> np.ndarray:
    return (load_image(path)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


@pytest.mark.parametrize("orientation, displayed", [
    (1, lambda a: a),
    (3, lambda a: np.rot90(a, 2)),
    (6, lambda a: np.rot90(a, -1)),   # stored rotated: rotate 90 degrees clockwise to show
    (8, lambda a: np.rot90(a, 1)),
    (2, lambda a: a[:, ::-1]),
])
def test_exif_orientation_applied(tmp_path, orientation, displayed):
    stored = _pattern()
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "oriented.png"
    Image.fromarray(stored).save(path, exif=exif)
    np.testing.assert_array_equal(_loaded(path), displayed(stored))


def test_exif_orientation_in_jpeg(tmp_path):
    stored = _pattern()
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "oriented.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=98)
    loaded = _loaded(path)
    assert loaded.shape == (40, 24, 3)
    assert np.abs(loaded.astype(float) - np.rot90(stored, -1)).mean() < 3


def test_cmyk_jpeg_not_inverted(tmp_path):
    rgb = _pattern()
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(path, quality=98)
    loaded = _loaded(path)
    assert loaded.shape == rgb.shape
    assert np.abs(loaded.astype(float) - rgb).mean() < 4  # an inverted or channel-shifted image is ~100 off


def test_palette_image_converted(tmp_path):
    rgb = _pattern()
    path = tmp_path / "palette.png"
    Image.fromarray(rgb).quantize(64).save(path)
    expected = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(_loaded(path), expected)


def test_pixel_limit_checked_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "large.png"
    Image.fromarray(_pattern(30, 40)).save(path)
    decoded = []
    monkeypatch.setattr(elpips.io, "_read_displayed", lambda p: decoded.append(p))
    with elpips.io.pixel_limit(1000), pytest.raises(ImageLoadError) as caught:
        load_image(path)
    assert str(caught.value).endswith("image is 30x40 = 1,200 pixels, over the limit of 1,000 pixels (max_pixels)")
    assert decoded == []


def test_pixel_limit_is_a_block_not_a_process_setting(tmp_path):
    path = tmp_path / "small.png"
    Image.fromarray(_pattern(30, 40)).save(path)
    assert elpips.io.max_pixels() == elpips.io.DEFAULT_MAX_PIXELS
    with elpips.io.pixel_limit(1000) as limit:
        assert limit == elpips.io.max_pixels() == 1000
        with elpips.io.pixel_limit(None) as kept, elpips.io.pixel_limit(2000):
            assert kept == 1000 and elpips.io.max_pixels() == 2000
            assert load_image(path).shape == (1, 3, 30, 40)
        assert elpips.io.max_pixels() == 1000
    assert elpips.io.max_pixels() == elpips.io.DEFAULT_MAX_PIXELS
    assert not hasattr(elpips.io, "MAX_PIXELS")


@pytest.mark.parametrize("limit", [0, -5, 2.5, True, "100"])
def test_pixel_limit_must_be_a_positive_integer(limit):
    with pytest.raises(ValueError, match=r"^limit must be a positive number of pixels"):
        elpips.io.pixel_limit(limit)
    assert elpips.io.max_pixels() == elpips.io.DEFAULT_MAX_PIXELS


def _png_claiming(path, width: int, height: int):
    """A PNG whose header claims ``width x height`` RGB pixels (the pixel data is a few bytes, never decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side, limit, message", [
    (10_000, None, "image is 10000x10000 = 100,000,000 pixels, over the limit of 40,000,000 pixels (max_pixels)"),
    (20_000, None, "image is over 178,956,970 pixels, over the limit of 40,000,000 pixels (max_pixels)"),
    (20_000, 500_000_000, "image is over 178,956,970 pixels, more than Pillow decodes (PIL.Image.MAX_IMAGE_PIXELS)"),
    (10_000, 150_000_000, "cannot be read as an image"),  # within the limit: decoded (and found corrupt)
])
def test_huge_image_is_our_refusal_without_pillow_warning(tmp_path, side, limit, message):
    """Pillow warns from 89M pixels and refuses from 179M; only our one-line error reaches the user."""
    path = _png_claiming(tmp_path / "huge.png", side, side)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with elpips.io.pixel_limit(limit), pytest.raises(ImageLoadError) as refused:
            load_image(path)
    assert str(refused.value).startswith(f"{path}: ") and message in str(refused.value)
    assert len(str(refused.value).splitlines()) == 1
    bombs = [warning for warning in caught if issubclass(warning.category, Image.DecompressionBombWarning)]
    assert bombs == []


@contextlib.contextmanager
def _deadline(seconds: float):
    """Fail instead of hanging: every blocking call (an open() of a FIFO) is interrupted after ``seconds``."""
    def expired(signum, frame):
        raise TimeoutError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")


@needs_fifo
def test_fifo_or_device_is_not_an_image(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with _deadline(5), pytest.raises(ImageLoadError) as caught:
        load_image(fifo)
    assert str(caught.value) == f"{fifo}: not a regular file"
    if os.path.exists("/dev/null"):
        with _deadline(5), pytest.raises(ImageLoadError, match="^/dev/null: not a regular file$"):
            load_image("/dev/null")


@needs_fifo
def test_fifo_is_not_a_clip(tmp_path):
    from elpips.clips import open_clip

    fifo = tmp_path / "pipe.gif"
    os.mkfifo(fifo)
    with _deadline(5), pytest.raises(ImageLoadError) as caught:
        open_clip(fifo)
    assert str(caught.value) == f"{fifo}: not a regular file"


@needs_fifo
def test_fifo_on_the_command_line_is_one_error_line(tmp_path, capsys):
    from elpips.scripts.cli import main

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with _deadline(5):
        assert main(["distance", "example:cat", str(fifo), "--metric", "l2"]) == 2
    assert capsys.readouterr().err == f"elpips distance: error: {fifo}: not a regular file\n"
    assert sorted(tmp_path.iterdir()) == [fifo]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_any_float_precision_accepted(random_metric, images, dtype):
    """Inputs of any float precision are computed in the metric's float32: the same distances as float32
    inputs holding the same values, and gradients in the input's dtype."""
    metric = random_metric("lpips-squeeze")
    x = images(1, 32, 32, seed=1).to(dtype)
    y = images(1, 32, 32, seed=2).to(dtype)
    expected = metric(x.float(), y.float())
    x.requires_grad_(True)
    distance = metric(x, y)
    assert distance.dtype == torch.float32
    torch.testing.assert_close(distance.detach(), expected)
    distance.sum().backward()
    assert x.grad.dtype == dtype


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "3", None])
def test_positive_int_rejects(value):
    with pytest.raises(ValueError, match="count must be an integer >= 1"):
        check_positive_int(value, "count")


def test_positive_int_accepts_the_minimum():
    assert check_positive_int(0, "steps", minimum=0) == 0 and check_positive_int(7, "count") == 7


@pytest.mark.parametrize("n", [2.5, 0, True, "3"])
def test_bad_sample_counts(random_metric, images, n):
    with pytest.raises(ValueError, match="positive integer"):
        random_metric("l2")(images(1, 8, 8), images(1, 8, 8), n=n)


@pytest.mark.parametrize("seed", [2**64, -1, 2.5, True, "3"])
def test_metric_seed_out_of_range_or_not_an_integer(seed):
    with pytest.raises(ValueError, match=r"^seed must be an integer in 0 \.\. 2\*\*64 - 1, got"):
        elpips.Metric("l2", device="cpu", seed=seed)


def test_metric_seed_range_ends():
    for seed in (0, 2**64 - 1, np.int64(5)):
        assert elpips.Metric("l2", device="cpu", seed=seed).generator.initial_seed() == int(seed)


def test_impossible_export_scale_refused_before_allocating():
    from elpips.scripts.render.frames import ExportSettings

    with pytest.raises(ValueError, match="the largest scale for 64x96 frames is 102"):
        ExportSettings(scale=100000).resolved(64, 96)
    assert ExportSettings(scale=102).resolved(64, 96).scale == 102
