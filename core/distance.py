"""Pure functions for the distance of one ensemble sample (spec sections 3 and 4)."""

from __future__ import annotations

import torch

INPUT_SHIFT = (-0.030, -0.088, -0.188)
INPUT_SCALE = (0.458, 0.448, 0.450)
NORMALIZE_EPS = 1e-10


def scale_input(images: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` in [0, 1] -> the network's input: ``((2x - 1) - shift) / scale`` per channel."""
    shift = torch.tensor(INPUT_SHIFT, device=images.device, dtype=images.dtype)[:, None, None]
    scale = torch.tensor(INPUT_SCALE, device=images.device, dtype=images.dtype)[:, None, None]
    return (images * 2 - 1 - shift) / scale


def normalize_channels(features: torch.Tensor) -> torch.Tensor:
    """Unit-normalise every pixel's feature vector: ``f / (||f||_2 + 1e-10)`` over dim -3 (channels)."""
    # Sum of squares + safe sqrt: as fast as linalg.vector_norm on CPU, and its backward is 0 (not NaN) at norm 0.
    # Multiplying by the (small, per-pixel) reciprocal instead of dividing: the backward of a broadcast division
    # makes several full-size passes for the divisor (neg, div, mul); a product's makes one (2.5% of a 128-px step).
    norm = _safe_sqrt(features.square().sum(dim=-3, keepdim=True))
    return features * (1.0 / (norm + NORMALIZE_EPS))


def _safe_sqrt(values: torch.Tensor) -> torch.Tensor:
    """``sqrt`` with gradient 0 instead of NaN at exactly 0 (a pixel whose ReLU features are all zero).

    The forward value is identical to ``torch.sqrt``.
    """
    positive = values > 0
    safe = torch.where(positive, values, torch.ones_like(values))
    return torch.where(positive, torch.sqrt(safe), torch.zeros_like(values))


def tap_distance(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``mean_pixels( sum_c w_c (a - b)^2 )`` for normalised taps ``[..., C, h, w]``; returns ``[...]``."""
    diff = a - b
    # mean_pixels(sum_c w_c s_c) == sum_c w_c mean_pixels(s_c): one reduction pass, then a tiny dot product.
    per_channel = (diff * diff).mean(dim=(-2, -1))
    with torch.autocast(device_type=per_channel.device.type, enabled=False):  # keep float32 under autocast
        return per_channel @ weight.to(per_channel.dtype)


def weighted_distance(
    features_a: list[torch.Tensor], features_b: list[torch.Tensor], weights: list[torch.Tensor]
) -> torch.Tensor:
    """Sum over taps of :func:`tap_distance`; leading dims broadcast (``[G, N]`` vs ``[N]`` etc.)."""
    total = tap_distance(features_a[0], features_b[0], weights[0])
    for a, b, w in zip(features_a[1:], features_b[1:], weights[1:]):
        total = total + tap_distance(a, b, w)
    return total


def rms_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Root-mean-square difference over ``[..., C, H, W]``; gradient 0 (not NaN) where ``a == b``."""
    return _safe_sqrt((a - b).square().mean(dim=(-3, -2, -1)))
