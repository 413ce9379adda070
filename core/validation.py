"""The input checks used by every entry point (they raise ``ValueError``, never ``assert``)."""

from __future__ import annotations

from typing import Any

import torch


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum``; bools and non-integers are rejected.

    Args:
        value: the argument to check.
        name: the API argument it was given as (the error message names it).
        minimum: the smallest allowed value (0 for counts that may be empty).

    Raises:
        ValueError: ``"<name> must be an integer >= <minimum>, got <value>"``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_images(images: torch.Tensor, name: str = "images", min_size: int = 1) -> None:
    """Raise ``ValueError`` unless ``images`` is a float ``[N, 3, H, W]`` batch of finite values in ``[0, 1]``.

    Args:
        images: the tensor to check.
        name: how the error message refers to it (``"x"``, ``"reference"`` ...).
        min_size: smallest allowed height and width in pixels.
    """
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor with values in [0, 1], got dtype {images.dtype}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} must have shape [N, 3, H, W] (RGB), got {list(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    height, width = images.shape[-2:]
    if min(height, width) < min_size:
        raise ValueError(f"{name} is {height}x{width} pixels; this metric needs at least {min_size}x{min_size}")
    with torch.no_grad():
        if not bool(torch.isfinite(images).all()):
            raise ValueError(f"{name} contains NaN or Inf values")
        low, high = torch.aminmax(images.detach())
        if low < 0 or high > 1:
            raise ValueError(f"{name} must have values in [0, 1], got range [{low.item():.4g}, {high.item():.4g}]")


def check_same_shape(x: torch.Tensor, y: torch.Tensor, x_name: str = "x", y_name: str = "y") -> None:
    """Raise ``ValueError`` unless ``x`` and ``y`` have the same shape."""
    if x.shape != y.shape:
        raise ValueError(f"{x_name} and {y_name} must have the same shape, got {list(x.shape)} and {list(y.shape)}")
