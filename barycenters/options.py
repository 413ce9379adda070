"""Checking and normalising the solver's inputs (every problem is one ``ValueError`` with a clear message)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from elpips.solver import CLIP_HIGH, CLIP_LOW
from elpips.validation import check_images

INIT_NOISE_MEAN = 0.5
INIT_NOISE_STD = 0.2


def check_power(power: Any) -> float:
    """The exponent ``p``: a finite number ``>= 1`` (``d^p`` with ``p < 1`` has an infinite gradient at 0)."""
    try:
        value = float(power)
    except (TypeError, ValueError):
        raise ValueError(f"power must be a number >= 1, got {power!r}") from None
    if not math.isfinite(value) or value < 1:
        raise ValueError(f"power must be a finite number >= 1 (2: barycenter, 1: median), got {power!r}")
    return value


def normalized_weights(weights: Sequence[float] | torch.Tensor | None, count: int) -> torch.Tensor:
    """``[count]`` float64 CPU weights summing to 1 (``None``: equal weights). Scale does not move the minimiser."""
    if weights is None:
        return torch.full((count,), 1.0 / count, dtype=torch.float64)
    try:
        values = torch.as_tensor(weights, dtype=torch.float64).detach().cpu().flatten()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"weights must be a sequence of numbers, got {weights!r}") from None
    if values.numel() != count:
        raise ValueError(f"got {values.numel()} weights for {count} images")
    if not bool(torch.isfinite(values).all()) or bool((values < 0).any()):
        raise ValueError(f"weights must be finite and non-negative, got {values.tolist()}")
    total = float(values.sum())
    if total <= 0:
        raise ValueError("weights must not all be zero")
    return values / total


def check_refs_per_step(refs_per_step: int | str, count: int) -> int:
    """``"all"`` -> ``count``; otherwise an int in ``1..count``."""
    if refs_per_step == "all":
        return count
    if isinstance(refs_per_step, str) and refs_per_step.isdigit():
        refs_per_step = int(refs_per_step)
    if isinstance(refs_per_step, bool) or not isinstance(refs_per_step, int) or not 1 <= refs_per_step <= count:
        raise ValueError(f"refs_per_step must be 'all' or an integer in 1..{count} (the number of images), "
                         f"got {refs_per_step!r}")
    return refs_per_step


def check_inputs(images: Any, min_size: int) -> None:
    """``images`` must be float ``[N, 3, H, W]`` in [0, 1], ``H, W >= min_size``."""
    check_images(images, "images", min_size)


def initial_image(init: str | torch.Tensor, images: torch.Tensor, weights: torch.Tensor,
                  generator: torch.Generator) -> torch.Tensor:
    """The starting point ``[1, 3, H, W]`` on ``images``' device, clipped to ``[1e-5, 1 - 1e-5]``.

    ``"noise"``: ``0.5 + 0.2 * N(0, 1)`` drawn from ``generator`` (the reference); ``"mean"``: the weighted pixel
    mean (the L2 barycenter); a tensor ``[1, 3, H, W]`` or ``[3, H, W]`` in [0, 1]: that image.
    """
    shape = (1, *images.shape[1:])
    if isinstance(init, torch.Tensor):
        start = init.unsqueeze(0) if init.dim() == 3 else init
        if tuple(start.shape) != shape:
            raise ValueError(f"init image must have shape {list(shape)} (or {list(shape[1:])}), "
                             f"got {list(init.shape)}")
        check_images(start, "init image")
        start = start.detach().to(device=images.device, dtype=torch.float32)
    elif init == "noise":
        noise = torch.randn(shape, generator=generator, dtype=torch.float32)
        start = (INIT_NOISE_MEAN + INIT_NOISE_STD * noise).to(images.device)
    elif init == "mean":
        start = torch.einsum("n,nchw->chw", weights.to(images), images).unsqueeze(0)
    else:
        raise ValueError(f"init must be 'noise', 'mean' or an image tensor, got {init!r}")
    return start.clamp(CLIP_LOW, CLIP_HIGH).contiguous()

