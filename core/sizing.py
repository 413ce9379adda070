"""Bringing images of different sizes to one size: an explicit ``W x H``, or the smallest / largest input's size,
stretched or centre-cropped to keep the aspect ratio, resampled with antialiased bicubic filtering.

    sizing = Sizing(fit="smallest", center_crop=True)
    images, record = conform_images([a, b], ["a.png", "b.png"], sizing)   # [2, 3, H, W], what was done

Without a sizing (``Sizing()``) images must already agree in size; the error names the :class:`Sizing` arguments
that would make them agree (:data:`SIZE_OPTIONS_HINT`). Errors name the Python arguments (``resize``, ``fit``,
``center_crop``); the commands check their flags themselves or reword these (``elpips.scripts.common``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .io import ImageLoadError, load_image, max_pixels

FIT_CHOICES = ("smallest", "largest")
RESAMPLER = "bicubic, antialiased (torch.nn.functional.interpolate, antialias=True), clipped to [0, 1]"
SIZE_OPTIONS_HINT = ("give a Sizing(resize=(height, width)) or Sizing(fit='smallest'|'largest') to bring them to "
                     "one size (add center_crop=True to keep the aspect ratio)")


class SizeMismatchError(ImageLoadError):
    """Images differ in size and no sizing was asked for."""


@dataclass(frozen=True)
class Sizing:
    """How inputs of different sizes are brought to one size.

    Attributes:
        resize: ``(height, width)`` every image is resampled to, or ``None``; at most
            :func:`~elpips.io.max_pixels` pixels where the sizing is made.
        fit: ``"smallest"`` / ``"largest"``: the target is the size of the input with the fewest / most pixels
            (the first such input on ties); ``None``: no fitting. Exclusive with ``resize``.
        center_crop: crop each image to the target's aspect ratio (centred) before resampling, instead of
            stretching it.
    """

    resize: tuple[int, int] | None = None
    fit: str | None = None
    center_crop: bool = False

    def __post_init__(self) -> None:
        if self.resize is not None and self.fit is not None:
            raise ValueError("resize and fit exclude each other: give one of them")
        if self.fit is not None and self.fit not in FIT_CHOICES:
            raise ValueError(f"fit must be one of {', '.join(FIT_CHOICES)}, got {self.fit!r}")
        if self.resize is not None and min(self.resize) < 1:
            raise ValueError(f"resize needs a positive height and width, got {self.resize}")
        if self.resize is not None and self.resize[0] * self.resize[1] > max_pixels():
            height, width = self.resize
            raise ValueError(f"resize to {width}x{height} = {height * width:,} pixels is over the limit of "
                             f"{max_pixels():,} pixels (max_pixels)")
        if self.center_crop and not self.active:
            raise ValueError("center_crop=True needs resize=(height, width) or fit='smallest'|'largest'")

    @property
    def active(self) -> bool:
        """``True`` when images are resampled to a common size."""
        return self.resize is not None or self.fit is not None

    def target(self, sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
        """The common ``(height, width)`` for inputs of these sizes (the first size when inactive)."""
        if not sizes:
            raise ValueError("no image sizes given")
        if self.resize is not None:
            return self.resize
        if self.fit is None:
            height, width = sizes[0]
            return height, width
        areas = [height * width for height, width in sizes]
        chosen = areas.index(min(areas) if self.fit == "smallest" else max(areas))
        height, width = sizes[chosen]
        return height, width

    def as_dict(self) -> dict:
        return {"resize_height_width": list(self.resize) if self.resize else None, "fit": self.fit,
                "center_crop": self.center_crop, "resampler": RESAMPLER if self.active else None}


def parse_size(text: str, name: str = "resize") -> tuple[int, int]:
    """``"128x96"`` (width x height) -> ``(96, 128)`` (height, width); errors call the value ``name``."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        width, height = (int(part) for part in parts)
    except ValueError:
        raise ValueError(f"{name} must be WIDTHxHEIGHT in pixels (e.g. 128x96), got {text!r}") from None
    if width < 1 or height < 1:
        raise ValueError(f"{name} needs a positive width and height, got {text!r}")
    return height, width


def center_crop_box(height: int, width: int, target_height: int, target_width: int) -> tuple[int, int, int, int]:
    """``(top, left, crop_height, crop_width)``: the largest centred window of an ``height x width`` image with
    the aspect ratio of ``target_height x target_width``."""
    if width * target_height > height * target_width:  # wider than the target: trim the sides
        crop_height, crop_width = height, max(1, round(height * target_width / target_height))
    else:
        crop_height, crop_width = max(1, round(width * target_height / target_width)), width
    return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width


def resample(images: torch.Tensor, height: int, width: int, center_crop: bool = False) -> torch.Tensor:
    """``[N, 3, h, w]`` float in [0, 1] -> ``[N, 3, height, width]``: optionally centre-cropped to the target's
    aspect ratio, then resampled by antialiased bicubic filtering and clipped to [0, 1]. An image already of the
    target size is returned unchanged (bit for bit)."""
    if images.shape[-2:] == (height, width):
        return images
    if center_crop:
        top, left, crop_height, crop_width = center_crop_box(images.shape[-2], images.shape[-1], height, width)
        images = images[..., top:top + crop_height, left:left + crop_width]
        if images.shape[-2:] == (height, width):
            return images.contiguous()
    resized = F.interpolate(images.float(), size=(height, width), mode="bicubic", antialias=True,
                            align_corners=False)
    return resized.clamp(0.0, 1.0)


def check_same_size(sizes: Sequence[tuple[int, int]], names: Sequence[str]) -> None:
    """:class:`SizeMismatchError` naming the first two inputs that differ (and the options that would help)."""
    for name, size in zip(names, sizes, strict=False):
        if tuple(size) != tuple(sizes[0]):
            raise SizeMismatchError(
                f"images must have the same size: {names[0]} is {sizes[0][0]}x{sizes[0][1]}, {name} is "
                f"{size[0]}x{size[1]} (height x width); {SIZE_OPTIONS_HINT}")


def conform_images(images: Sequence[torch.Tensor], names: Sequence[str], sizing: Sizing,
                   min_size: int = 1) -> tuple[torch.Tensor, dict]:
    """Bring ``[1, 3, h_i, w_i]`` images to one size.

    Args:
        images: float images in [0, 1].
        names: how errors and the record refer to each image.
        sizing: what to do; inactive: sizes must match (:class:`SizeMismatchError` otherwise).
        min_size: smallest accepted height and width of the result.

    Returns:
        ``([N, 3, H, W], record)``; ``record`` holds the sizing options, the target and each input's size
        (for ``log.json``).
    """
    sizes = [(image.shape[-2], image.shape[-1]) for image in images]
    if not sizing.active:
        check_same_size(sizes, names)
    height, width = sizing.target(sizes)
    if min(height, width) < min_size:
        raise ImageLoadError(f"the images would be {height}x{width} pixels; at least {min_size}x{min_size} needed")
    stacked = torch.cat([resample(image, height, width, sizing.center_crop) for image in images])
    return stacked, sizing_record(sizing, (height, width), sizes)


def sizing_record(sizing: Sizing, target: tuple[int, int], sizes: Sequence[tuple[int, int]]) -> dict:
    """What ``log.json`` records about the sizing: options, resampler, target and the input sizes."""
    return {**sizing.as_dict(), "size_height_width": list(target),
            "resized_inputs": sum(tuple(size) != tuple(target) for size in sizes),
            "input_sizes_height_width": [list(size) for size in sizes]}


def load_sized_images(specs: Sequence[str | os.PathLike], sizing: Sizing,
                      min_size: int = 1) -> tuple[torch.Tensor, dict]:
    """:func:`~elpips.io.load_image` every file, then :func:`conform_images`: ``([N, 3, H, W], record)``."""
    if not specs:
        raise ImageLoadError("no images given")
    images = [load_image(spec, 1 if sizing.active else min_size) for spec in specs]
    return conform_images(images, [os.fspath(spec) for spec in specs], sizing, min_size)
