"""Image files in and out: loading to ``[1, 3, H, W]`` float tensors, atomic writes of images, JSON and bytes.

Loading accepts 8- and 16-bit PNG/JPEG/... through Pillow (16-bit PNGs through pypng, which keeps all 16 bits;
other formats through imageio) as an image viewer shows them: the EXIF orientation is applied, CMYK, YCbCr and
palette images are converted to RGB; grey becomes RGB, grey+alpha becomes grey, RGBA drops alpha (as the
reference does). Every problem becomes an :class:`ImageLoadError` with the file name in it.
Writing goes to a temporary file in the target folder, then ``os.replace``: nothing is ever half-written.
"""

from __future__ import annotations

import contextlib
import json
import operator
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import torch

EXAMPLES_DIR = Path(__file__).resolve().parent / "data" / "examples"
EXAMPLE_PREFIX = "example:"


DEFAULT_MAX_PIXELS = 40_000_000
"""Largest image (height x width) :func:`load_image` accepts unless :func:`pixel_limit` says otherwise."""

_max_pixels: ContextVar[int] = ContextVar("elpips_max_pixels", default=DEFAULT_MAX_PIXELS)


def max_pixels() -> int:
    """The largest image (height x width) accepted here and now, checked from a file's header before decoding:
    :data:`DEFAULT_MAX_PIXELS` unless a :func:`pixel_limit` block is in force."""
    return _max_pixels.get()


def pixel_limit(limit: int | None) -> AbstractContextManager[int]:
    """A ``with`` block in which images of up to ``limit`` pixels are accepted (``None``: the limit in force)::

        with elpips.io.pixel_limit(100_000_000):
            image = elpips.io.load_image("panorama.png")

    The limit belongs to the block (a context variable), not to the process: it holds in this thread (or asyncio
    task) until the block ends. Every metric call works in passes within its memory budget, whatever the size.

    Raises:
        ValueError: ``limit`` is not a positive integer.
    """
    if limit is None:
        return contextlib.nullcontext(max_pixels())
    try:
        value = operator.index(limit)
    except TypeError:
        value = 0
    if isinstance(limit, bool) or value < 1:
        raise ValueError(f"limit must be a positive number of pixels, got {limit!r}")
    return _pixel_limit_block(value)


@contextlib.contextmanager
def _pixel_limit_block(limit: int) -> Iterator[int]:
    token = _max_pixels.set(limit)
    try:
        yield limit
    finally:
        _max_pixels.reset(token)


class ImageLoadError(ValueError):
    """An image file is missing, unreadable or of an unsupported kind."""


class OutputWriteError(OSError):
    """An output file or folder cannot be written."""


def example_names() -> list[str]:
    """Names of the example images shipped with the package (``cat``, ``dog`` ...)."""
    return sorted(path.stem for path in EXAMPLES_DIR.glob("*.png"))


def resolve_image_path(spec: str | os.PathLike) -> Path:
    """A file path, or ``example:NAME`` for a shipped example image."""
    text = os.fspath(spec)
    if text.startswith(EXAMPLE_PREFIX):
        name = text[len(EXAMPLE_PREFIX):]
        path = EXAMPLES_DIR / (name if name.endswith(".png") else f"{name}.png")
        if not path.is_file():
            raise ImageLoadError(f"no example image {name!r}; examples: {', '.join(example_names())}")
        return path
    return Path(text).expanduser()


def _is_16bit_png(path: Path) -> bool:
    """PNG signature and an IHDR bit depth of 16 (Pillow, imageio's default, truncates 16-bit RGB to 8 bits)."""
    with open(path, "rb") as handle:
        header = handle.read(25)
    return len(header) == 25 and header[:8] == b"\x89PNG\r\n\x1a\n" and header[24] == 16


def _read_png16(path: Path) -> np.ndarray:
    """A 16-bit PNG as ``[H, W]`` or ``[H, W, planes]`` uint16, exactly (through pypng)."""
    import png

    width, height, rows, info = png.Reader(filename=str(path)).asDirect()
    array = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(height, width, info["planes"])
    return array[:, :, 0] if info["planes"] == 1 else array


_CONVERTED_MODES = {"CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "RGBX": "RGB", "RGBa": "RGBA",
                   "P": "RGBA", "PA": "RGBA", "La": "LA"}
"""Pillow modes whose pixels are not RGB(A) or grey values: converted as an image viewer shows them."""


def _read_displayed(path: Path) -> np.ndarray:
    """The first frame as an image viewer shows it: EXIF orientation applied, CMYK / YCbCr / palette / other
    colour modes converted to RGB(A). Files Pillow cannot open go through imageio's other plugins."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        image: Image.Image = Image.open(path)
    except UnidentifiedImageError:
        return np.asarray(iio.imread(path, index=0))
    with image:
        image.seek(0)
        image = ImageOps.exif_transpose(image)
        if image.mode in _CONVERTED_MODES:
            image = image.convert(_CONVERTED_MODES[image.mode])
        return np.asarray(image)


def _to_unit_float(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float32)
        if not np.isfinite(values).all():
            raise ImageLoadError(f"{path}: image contains NaN or Inf values")
        if values.min() < 0 or values.max() > 1:
            raise ImageLoadError(f"{path}: floating-point image values must lie in [0, 1]")
        return values
    raise ImageLoadError(f"{path}: unsupported pixel type {array.dtype} (use 8- or 16-bit images)")


def _to_rgb(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3:
        raise ImageLoadError(f"{path}: expected a single still image, got array shape {array.shape}")
    channels = array.shape[2]
    if channels == 1:
        return np.repeat(array, 3, axis=2)
    if channels == 2:  # grey + alpha
        return np.repeat(array[:, :, :1], 3, axis=2)
    if channels in (3, 4):  # RGB, RGBA: alpha dropped as the reference does
        return array[:, :, :3]
    raise ImageLoadError(f"{path}: unsupported number of channels {channels}")


def load_image(spec: str | os.PathLike, min_size: int = 1) -> torch.Tensor:
    """Read one image as a float32 ``[1, 3, H, W]`` tensor in [0, 1].

    Args:
        spec: file path, or ``example:NAME`` for a shipped example.
        min_size: smallest accepted height and width (the error states it).
    """
    path = resolve_image_path(spec)
    if not path.exists():
        raise ImageLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageLoadError(f"{path}: is a folder, not an image file")
    if not path.is_file():  # a FIFO or a device would block or stream forever when read
        raise ImageLoadError(f"{path}: not a regular file")
    _check_pixel_count(path)
    try:
        with without_bomb_warning():  # the size is checked against max_pixels() already
            array = _read_png16(path) if _is_16bit_png(path) else _read_displayed(path)
    except Exception as error:  # imageio raises many types for corrupt or unknown files
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(":")
        raise ImageLoadError(f"{path}: cannot be read as an image (corrupt or unsupported file: {reason})") from None
    rgb = _to_rgb(_to_unit_float(array, path), path)
    height, width = rgb.shape[:2]
    if min(height, width) < min_size:
        raise ImageLoadError(f"{path}: image is {height}x{width} pixels; at least {min_size}x{min_size} needed")
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).unsqueeze(0).contiguous()


@contextlib.contextmanager
def without_bomb_warning() -> Iterator[None]:
    """Pillow's ``DecompressionBombWarning`` silenced: image sizes are checked against :func:`max_pixels`."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _check_pixel_count(path: Path) -> None:
    """Refuse an image over :func:`max_pixels` from its header, before any pixel is decoded."""
    from PIL import Image

    limit = max_pixels()
    try:
        with without_bomb_warning():
            shape = iio.improps(path, index=0).shape
    except Image.DecompressionBombError:  # over twice PIL.Image.MAX_IMAGE_PIXELS: Pillow does not say the size
        pillow_max = Image.MAX_IMAGE_PIXELS
        assert pillow_max is not None  # Pillow raises the error only while it has a limit
        pillow_limit = 2 * pillow_max
        if limit < pillow_limit:
            raise ImageLoadError(f"{path}: image is over {pillow_limit:,} pixels, over the limit of {limit:,} "
                                 "pixels (max_pixels)") from None
        raise ImageLoadError(f"{path}: image is over {pillow_limit:,} pixels, more than Pillow decodes "
                             "(PIL.Image.MAX_IMAGE_PIXELS)") from None
    except Exception:  # unreadable headers are reported by the decoder with its own message
        return
    if len(shape) >= 2 and shape[0] * shape[1] > limit:
        raise ImageLoadError(f"{path}: image is {shape[0]}x{shape[1]} = {shape[0] * shape[1]:,} pixels, over the "
                             f"limit of {limit:,} pixels (max_pixels)")


def load_images(specs: list[str], min_size: int = 1) -> torch.Tensor:
    """Load several images of equal size into ``[N, 3, H, W]``; a clear error names any size mismatch."""
    if not specs:
        raise ImageLoadError("no images given")
    images = [load_image(spec, min_size) for spec in specs]
    first = images[0].shape[-2:]
    for spec, image in zip(specs, images, strict=False):
        if image.shape[-2:] != first:
            raise ImageLoadError(
                f"images must have the same size: {specs[0]} is {first[0]}x{first[1]}, "
                f"{spec} is {image.shape[-2]}x{image.shape[-1]} (height x width)"
            )
    return torch.cat(images)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` or ``[1, 3, H, W]`` float in [0, 1] -> ``[H, W, 3]`` uint8 (rounded, clipped)."""
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise ValueError(f"to_uint8 takes one image, got a batch of {image.shape[0]}")
        image = image[0]
    array = image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return np.round(array * 255).astype(np.uint8)


def _default_file_mode() -> int:
    """``0o666`` less the process umask (what ``open(path, "w")`` would have given)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, else deleted."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}",
                                             dir=target.parent)
        os.close(handle)
    except OSError as error:
        raise OutputWriteError(f"cannot write to '{target.parent}': {error.strerror or error}") from None
    try:
        yield Path(temporary)
        os.chmod(temporary, _default_file_mode())  # mkstemp creates 0600; outputs get the usual umask mode
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def ensure_output_dir(path: str | os.PathLike) -> Path:
    """Create folder ``path`` (and parents) and check that files can be written there, before any long work;
    :class:`OutputWriteError` names the folder otherwise."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise OutputWriteError(f"cannot write to '{folder}': {error.strerror or error}") from None
    return folder


def save_image(path: str | os.PathLike, image: torch.Tensor | np.ndarray) -> Path:
    """Write ``image`` (``[3, H, W]``/``[1, 3, H, W]`` float in [0, 1], or ``[H, W, 3]`` uint8) atomically."""
    array = image if isinstance(image, np.ndarray) else to_uint8(image)
    with atomic_path(path) as temporary:
        iio.imwrite(temporary, array, extension=Path(path).suffix or ".png")
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` atomically (UTF-8)."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
