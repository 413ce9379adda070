"""Checking and normalising the geodesic solver's inputs (every problem is one ``ValueError``), the default
schedule, and what a checkpoint must agree on to be resumed."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from elpips import Metric
from elpips.record import metric_identity, tensor_digest
from elpips.solver import reference_learning_rate
from elpips.validation import check_images

from .levels import Level
from .path import keyframe_indices

DEFAULT_BASE_RATE = 0.005
"""Base rate of the default schedule. The barycenter's 0.03 starts from noise; a geodesic starts from the linear
blend, where 0.03 overshoots (cat/dog at 75x120, random backbone, 40 steps: energy +129% vs the blend, 0.01: -7%,
0.003: -9%)."""


def geodesic_learning_rate(step: int) -> float:
    """The reference's decaying schedule ``base / (1 + 0.02 t'^0.75)`` with ``base =`` :data:`DEFAULT_BASE_RATE`."""
    return reference_learning_rate(step, DEFAULT_BASE_RATE)


def stack_keyframes(keyframes: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """``[S+1, 3, H, W]`` from a tensor or a sequence of ``[3, H, W]`` / ``[1, 3, H, W]`` images of one size."""
    if isinstance(keyframes, torch.Tensor):
        return keyframes
    if len(keyframes) == 0:
        raise ValueError("keyframes is empty: give at least 2 images")
    shaped = []
    for index, image in enumerate(keyframes):
        if not isinstance(image, torch.Tensor):
            raise ValueError(f"keyframe {index} must be a torch.Tensor, got {type(image).__name__}")
        if image.dim() == 4 and image.shape[0] == 1:
            image = image[0]
        if image.dim() != 3:
            raise ValueError(f"keyframe {index} must be [3, H, W] or [1, 3, H, W], got {list(image.shape)}")
        shaped.append(image)
    if len({tuple(image.shape) for image in shaped}) > 1:
        raise ValueError(f"keyframes must have the same size, got {[list(image.shape) for image in shaped]}")
    return torch.stack(shaped)


def check_init(init: str | torch.Tensor, keys: torch.Tensor, intervals: tuple[int, ...]) -> torch.Tensor | None:
    """``None`` for the linear blend, else the initial full-resolution path with exact keyframes."""
    if isinstance(init, str):
        if init != "linear":
            raise ValueError(f"init must be 'linear' or a [K+1, 3, H, W] tensor, got {init!r}")
        return None
    if not isinstance(init, torch.Tensor):
        raise ValueError(f"init must be 'linear' or a tensor, got {type(init).__name__}")
    expected = [sum(intervals) + 1, *keys.shape[1:]]
    if list(init.shape) != expected:
        raise ValueError(f"init must have shape {expected} (the whole path), got {list(init.shape)}")
    check_images(init, "init")
    path = init.detach().to(device=keys.device, dtype=torch.float32).clone()
    path[keyframe_indices(intervals)] = keys
    return path


def solve_record(metric: Metric, keys: torch.Tensor, levels: list[Level], samples_per_step: int,
                 init: torch.Tensor | None, lr: str, ensemble_stream: str, average_last: float) -> dict:
    """What determines a solve's result, as its checkpoint records it (a resume must agree on all of it)."""
    return {
        "metric": metric_identity(metric),
        "keyframes_shape": list(keys.shape),
        "keyframes_sha256": tensor_digest([keys]),
        "levels": [[list(level.intervals), level.scale, level.steps] for level in levels],
        "samples_per_step": samples_per_step,
        "lr": lr,
        "ensemble_stream": ensemble_stream,
        "average_last": average_last,
        "init": "linear" if init is None else tensor_digest([init]),
    }
