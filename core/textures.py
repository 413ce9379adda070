"""Tileable textures (docs/texture-morphing.md): how seamless an image is, a tiled preview, procedural test
textures.

:func:`seam_statistic` measures whether an image repeats without a visible seam: the mean absolute difference
across the wrap-around edges (last row to first row, last column to first column) divided by the mean absolute
difference between neighbouring interior rows and columns. About 1 for a seamless image, far above 1 for a
visible seam.
"""

from __future__ import annotations

import math

import torch

from .validation import check_positive_int


def seam_statistic(images: torch.Tensor) -> torch.Tensor:
    """``[N]`` float64 seam statistics of ``images`` ``[N, C, H, W]`` (``H, W >= 2``).

    ``(sum of |x[H-1] - x[0]| over rows' wrap and |x[:, W-1] - x[:, 0]| over the columns' wrap) / (C (W + H))``
    divided by the same mean over every neighbouring interior pair (``C ((H-1) W + H (W-1))`` of them). An image
    whose interior is constant: 1 when its wrap is constant too, ``inf`` otherwise.
    """
    if images.dim() != 4 or images.shape[-2] < 2 or images.shape[-1] < 2:
        raise ValueError(f"images must be [N, C, H, W] with H, W >= 2, got {list(images.shape)}")
    x = images.detach().to(torch.float64)
    channels, height, width = x.shape[1:]
    wrap = ((x[..., -1, :] - x[..., 0, :]).abs().sum(dim=(-2, -1))
            + (x[..., -1] - x[..., 0]).abs().sum(dim=(-2, -1))) / (channels * (width + height))
    interior = ((x[..., 1:, :] - x[..., :-1, :]).abs().sum(dim=(-3, -2, -1))
                + (x[..., 1:] - x[..., :-1]).abs().sum(dim=(-3, -2, -1)))
    interior = interior / (channels * ((height - 1) * width + height * (width - 1)))
    flat = interior == 0
    ratio = wrap / torch.where(flat, torch.ones_like(interior), interior)
    return torch.where(flat, torch.where(wrap == 0, 1.0, math.inf).to(ratio), ratio)


def tiled(images: torch.Tensor, repeats: int = 2) -> torch.Tensor:
    """``images`` ``[..., H, W]`` repeated ``repeats x repeats`` times (the 2x2 tiled preview by default)."""
    check_positive_int(repeats, "repeats")
    return images.repeat(*([1] * (images.dim() - 2)), repeats, repeats)


def procedural_texture(height: int, width: int, seed: int = 0, waves: int = 6) -> torch.Tensor:
    """A tileable RGB texture ``[1, 3, height, width]`` in ``[0, 1]``: per channel a sum of ``waves`` plane
    waves with integer periods per image (``cos(2 pi (a i / H + b j / W) + phase)``, ``a, b`` in ``-4..4``),
    so that it repeats seamlessly in both directions."""
    check_positive_int(height, "height")
    check_positive_int(width, "width")
    check_positive_int(waves, "waves")
    generator = torch.Generator().manual_seed(seed)
    rows = torch.arange(height, dtype=torch.float64)[:, None] / height
    cols = torch.arange(width, dtype=torch.float64)[None, :] / width
    channels = []
    for _ in range(3):
        frequencies = torch.randint(-4, 5, (waves, 2), generator=generator)
        frequencies[frequencies.abs().sum(dim=1) == 0, 0] = 1
        phases = torch.rand(waves, generator=generator, dtype=torch.float64) * 2 * math.pi
        amplitudes = 0.5 + torch.rand(waves, generator=generator, dtype=torch.float64)
        channel = sum(amplitude * torch.cos(2 * math.pi * (a * rows + b * cols) + phase)
                      for (a, b), phase, amplitude in zip(frequencies.tolist(), phases, amplitudes, strict=True))
        channels.append(channel / (2 * amplitudes.sum()) + 0.5)
    return torch.stack(channels)[None].clamp(0, 1).to(torch.float32)
