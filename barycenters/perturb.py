"""Input sets of the paper's two barycenter demonstrations (``docs/algorithm.md#barycenters``): noisy copies and
shifted copies."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_single(image: torch.Tensor, count: int) -> None:
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[:2] != (1, 3):
        shape = list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must have shape [1, 3, H, W], got {shape}")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")


def noisy_copies(image: torch.Tensor, count: int = 10, scale: float = 0.07,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``count`` copies of ``image`` plus i.i.d. Gaussian noise of standard deviation ``scale``, clipped to [0, 1].

    Args:
        image: ``[1, 3, H, W]`` in [0, 1].
        count: number of copies.
        scale: noise standard deviation (the paper: 0.07), ``>= 0``.
        generator: CPU generator for the noise.

    Returns:
        ``[count, 3, H, W]`` in [0, 1], on ``image``'s device.
    """
    _check_single(image, count)
    if not scale >= 0:
        raise ValueError(f"noise scale must be non-negative, got {scale}")
    noise = torch.randn((count, *image.shape[1:]), generator=generator, dtype=torch.float32)
    return (image + scale * noise.to(image.device)).clamp(0.0, 1.0)


def shift_image(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``image`` ``[B, C, H, W]`` moved down by ``dy`` and right by ``dx`` pixels (negative: up/left); the
    uncovered border is filled by reflection (no interpolation). Output ``[y, x]`` = input ``[y - dy, x - dx]``."""
    height, width = image.shape[-2:]
    if abs(dy) >= height or abs(dx) >= width:
        raise ValueError(f"shift ({dy}, {dx}) is too large for a {height}x{width} image")
    padded = F.pad(image, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)), mode="reflect")
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top:top + height, left:left + width]


def shifted_copies(image: torch.Tensor, count: int = 10, max_shift: int = 2,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` copies of ``image``, each shifted by an integer offset uniform in ``[-max_shift, max_shift]^2``
    (reflect-padded, ``docs/algorithm.md#barycenters``).

    Returns:
        ``([count, 3, H, W]`` in [0, 1], ``[count, 2]`` long ``(dy, dx)`` shifts).
    """
    _check_single(image, count)
    if max_shift < 0:
        raise ValueError(f"max shift must be non-negative, got {max_shift}")
    shifts = torch.randint(-max_shift, max_shift + 1, (count, 2), generator=generator)
    copies = [shift_image(image, int(dy), int(dx)) for dy, dx in shifts.tolist()]
    return torch.cat(copies), shifts
