"""Coarse-to-fine plans: which frame counts and resolutions the solver visits, and for how many steps."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .path import downscale, keyframe_indices, linear_path, resample_path, upscale_path


@dataclass(frozen=True)
class Level:
    """One stage of a solve.

    Attributes:
        intervals: intervals per keyframe segment at this stage.
        scale: 1 at full resolution, 2 at half resolution (box-downscaled keyframes).
        steps: optimisation steps spent at this stage.
    """

    intervals: tuple[int, ...]
    scale: int
    steps: int

    @property
    def frames(self) -> int:
        """Frames on the path at this stage, keyframes included."""
        return sum(self.intervals) + 1


def time_ladder(intervals: Sequence[int], max_levels: int = 4) -> list[tuple[int, ...]]:
    """Interval counts from coarse to fine: halve (rounding up) until the longest segment has 2 intervals (one
    interior frame) or ``max_levels`` counts are listed; the last entry is ``intervals`` itself.
    E.g. ``(9,) -> [(2,), (3,), (5,), (9,)]``."""
    ladder = [tuple(int(k) for k in intervals)]
    while max(ladder[0]) > 2 and len(ladder) < max_levels:
        ladder.insert(0, tuple(max(1, math.ceil(k / 2)) for k in ladder[0]))
    return ladder


def plan_levels(intervals: Sequence[int], steps: int, coarse_to_fine: bool = True, spatial: bool = False,
                coarse_fraction: float = 0.5, max_levels: int = 4) -> list[Level]:
    """The stages of a solve with ``steps`` steps in total.

    Without coarse-to-fine there is one stage. With it, the frame counts of :func:`time_ladder` are visited in
    order; the coarse stages share ``round(coarse_fraction * steps)`` steps evenly (later ones take the
    remainder), the final stage gets the rest. ``spatial`` runs the coarse stages at half resolution (or adds
    one half-resolution stage when there is only one frame count). Stages left with 0 steps are dropped.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not 0.0 <= coarse_fraction < 1.0:
        raise ValueError(f"coarse_fraction must be in [0, 1), got {coarse_fraction}")
    ladder = time_ladder(intervals, max_levels) if coarse_to_fine else [tuple(intervals)]
    scales = [2 if spatial else 1] * (len(ladder) - 1) + [1]
    if spatial and len(ladder) == 1:
        ladder, scales = ladder * 2, [2, 1]
    coarse = len(ladder) - 1
    coarse_steps = round(coarse_fraction * steps) if coarse else 0
    shares = [coarse_steps // coarse + (1 if s >= coarse - coarse_steps % coarse else 0)
              for s in range(coarse)] if coarse else []
    shares.append(steps - coarse_steps)
    levels = [Level(counts, scale, share) for counts, scale, share in zip(ladder, scales, shares, strict=False)]
    return [level for level in levels[:-1] if level.steps > 0] + [levels[-1]]


def level_starts(levels: Sequence[Level]) -> list[int]:
    """Global step at which each stage begins."""
    starts, total = [], 0
    for level in levels:
        starts.append(total)
        total += level.steps
    return starts


def initial_path(level: Level, keys: torch.Tensor, init: torch.Tensor | None,
                 intervals: tuple[int, ...]) -> torch.Tensor:
    """The starting path of the first stage: the linear blend at its frame count and scale, or the given
    full-resolution path ``init`` resampled to it (keyframes exact)."""
    if init is None:
        return linear_path(downscale(keys, level.scale), level.intervals)
    path = resample_path(init, intervals, level.intervals)
    coarse = downscale(path, level.scale)
    coarse[keyframe_indices(level.intervals)] = downscale(keys, level.scale)
    return coarse


def carry_path(path: torch.Tensor, old: Level, new: Level, keys: torch.Tensor,
               periodic: bool = False) -> torch.Tensor:
    """Carry a solved path to the next stage: resample in time, then lift to the new resolution (on the torus
    when ``periodic``: the metric's tileable mode)."""
    if old.intervals != new.intervals:
        path = resample_path(path, old.intervals, new.intervals)
    if old.scale != new.scale:
        if old.scale % new.scale:
            raise ValueError(f"cannot go from scale {old.scale} to {new.scale}")
        factor = old.scale // new.scale
        path = upscale_path(path, downscale(keys, new.scale), new.intervals, factor, periodic)
    return path
