"""Frame interpolation of a clip: ``K - 1`` new frames on the geodesic between every pair of consecutive frames,
solved window by window so that memory and time per window do not depend on the clip's length.

A clip of ``T`` keyframes becomes ``(T - 1) K + 1`` frames; output frame ``t K`` is keyframe ``t`` exactly.
A :class:`Window` is a run of ``W`` consecutive keyframes (the last window may be shorter) solved as one path
through them with every keyframe pinned (:func:`~elpips.geodesics.solve` with ``K`` intervals per segment).
Consecutive windows share their boundary keyframe; each output frame belongs to exactly one window
(:meth:`Window.owned`), so windows can be solved in any order, on any process, and stitched by index.

Pinned keyframes decouple the segments: ``E = sum_k d(x_k, x_{k+1})^2`` splits into one independent sum per
keyframe pair, so a window of ``W`` keyframes has the same minimiser as ``W - 1`` pairs solved alone (the
window only shares each step's ensemble sample and the keyframes' features between its pairs). The default is
therefore ``W = 2``, one pair per window (see the README for the measurement behind this).

Each window draws its ensemble samples from its own generator, seeded from ``(seed, window index)``, so a
window's frames do not depend on which process solves it, in which order, or whether the run was resumed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from elpips import Metric
from elpips.solver import Schedule

from .evaluate import evaluate_path
from .path import linear_path
from .solver import GeodesicStepInfo, solve


@dataclass(frozen=True)
class Window:
    """Keyframes ``first .. last`` (clip frame indices, inclusive) solved as one path.

    Attributes:
        index: position in the plan (0-based).
        first, last: the window's first and last keyframe.
    """

    index: int
    first: int
    last: int

    @property
    def segments(self) -> int:
        """Keyframe pairs in the window."""
        return self.last - self.first

    def path_range(self, factor: int) -> tuple[int, int]:
        """Output indices ``[start, stop)`` of the window's whole path (both end keyframes included)."""
        return self.first * factor, self.last * factor + 1

    def owned(self, factor: int, num_keyframes: int) -> tuple[int, int]:
        """Output indices ``[start, stop)`` this window writes: its path without its last keyframe, which the
        next window writes (the clip's last window keeps it)."""
        start, stop = self.path_range(factor)
        return start, stop if self.last == num_keyframes - 1 else stop - 1


def output_count(num_keyframes: int, factor: int) -> int:
    """Frames of the interpolated clip: ``(T - 1) K + 1``."""
    return (num_keyframes - 1) * factor + 1


def check_factor(factor: int, name: str = "factor") -> None:
    """``factor`` (``K``) must be an integer >= 2; errors call it ``name``."""
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
        raise ValueError(f"{name} must be an integer >= 2 (K - 1 new frames per pair), got {factor!r}")


def check_keyframes_per_window(keyframes_per_window: int, name: str = "keyframes_per_window") -> None:
    """Keyframes per window must be an integer >= 2; errors call the value ``name``."""
    if isinstance(keyframes_per_window, bool) or not isinstance(keyframes_per_window, int) \
            or keyframes_per_window < 2:
        raise ValueError(f"{name} must be an integer >= 2 (keyframes per window), got {keyframes_per_window!r}")


def plan_windows(num_keyframes: int, keyframes_per_window: int = 2) -> list[Window]:
    """Windows of ``keyframes_per_window`` keyframes covering ``num_keyframes``, consecutive ones sharing one
    keyframe: ``plan_windows(6, 3)`` -> keyframes ``0..2, 2..4, 4..5``."""
    if num_keyframes < 2:
        raise ValueError(f"interpolation needs at least 2 frames, got {num_keyframes}")
    check_keyframes_per_window(keyframes_per_window)
    step = keyframes_per_window - 1
    return [Window(index, first, min(first + step, num_keyframes - 1))
            for index, first in enumerate(range(0, num_keyframes - 1, step))]


def window_seed(seed: int, index: int) -> int:
    """The seed of window ``index``'s sample generator (its evaluation generator uses the next integer)."""
    return int(np.random.SeedSequence([int(seed) % 2**63, int(index)]).generate_state(1, dtype=np.uint32)[0]) * 2


def crossfade(keyframes: torch.Tensor, factor: int) -> torch.Tensor:
    """The linear cross-fade through ``keyframes`` ``[S+1, 3, H, W]``: ``[S K + 1, 3, H, W]``, frame
    ``s K + j`` is ``(1 - j/K) P_s + (j/K) P_{s+1}`` (the keyframes exactly)."""
    return linear_path(keyframes, [factor] * (keyframes.shape[0] - 1))


@dataclass
class SolveSettings:
    """The per-window solver options (see :func:`~elpips.geodesics.solve`)."""

    steps: int = 200
    lr: Schedule | float | None = None
    coarse_to_fine: bool = True
    spatial: bool = False
    chunk_size: int = 8
    eval_samples: int = 8
    checkpoint_every: int = 25
    average_last: float | None = None


@dataclass
class WindowResult:
    """A solved window.

    Attributes:
        window: which one.
        frames: ``[S K + 1, 3, H, W]`` float32 CPU, the window's whole path (keyframes exact).
        distances, half_widths: ``[S K]`` many-sample distances of adjacent frames and their 95% half-widths.
        energy: ``sum d^2`` of the path; crossfade_energy: the same for the cross-fade, under the same samples.
        samples: ensemble samples behind the distances.
        solve_seconds: wall time of this call; resumed_from: step a resumed solve continued from.
    """

    window: Window
    frames: torch.Tensor
    distances: torch.Tensor
    half_widths: torch.Tensor
    energy: float
    crossfade_energy: float
    samples: int
    solve_seconds: float = 0.0
    resumed_from: int = 0
    energy_history: list[float] = field(default_factory=list)

    def owned_frames(self, factor: int, num_keyframes: int) -> torch.Tensor:
        """The frames this window writes (see :meth:`Window.owned`)."""
        start, stop = self.window.owned(factor, num_keyframes)
        return self.frames[:stop - start]


def solve_window(keyframes: torch.Tensor, metric: Metric, *, window: Window, factor: int, seed: int,
                 settings: SolveSettings, checkpoint: str | os.PathLike | None = None, resume: bool = False,
                 callback: Callable[[GeodesicStepInfo], None] | None = None) -> WindowResult:
    """The geodesic through one window's keyframes.

    The keyframes and the metric are positional, every option is keyword-only (in the order of
    :func:`~elpips.geodesics.solve`'s). The metric is never changed (see :func:`~elpips.geodesics.solve`).

    Args:
        keyframes: ``[window.segments + 1, 3, H, W]`` float in [0, 1].
        metric: an :class:`elpips.Metric`.
        window: which window of the clip (its index seeds the window's generators).
        factor: ``K``, intervals per keyframe pair.
        seed: the clip's seed (the window's generators derive from it and ``window.index``).
        settings: the solver options of every window.
        checkpoint, resume, callback: as in :func:`~elpips.geodesics.solve` (a path, whether to continue it, a
            function called after every step).
    """
    check_factor(factor)
    if keyframes.shape[0] != window.segments + 1:
        raise ValueError(f"window {window.index} needs {window.segments + 1} keyframes, got {keyframes.shape[0]}")
    own_seed = window_seed(seed, window.index)
    started = time.perf_counter()
    result = solve(keyframes, metric, frames=[factor] * window.segments, steps=settings.steps, lr=settings.lr,
                   generator=torch.Generator().manual_seed(own_seed), checkpoint=checkpoint,
                   checkpoint_every=settings.checkpoint_every, resume=resume, callback=callback,
                   chunk_size=settings.chunk_size, eval_samples=settings.eval_samples,
                   coarse_to_fine=settings.coarse_to_fine, spatial=settings.spatial,
                   eval_generator=torch.Generator().manual_seed(own_seed + 1), average_last=settings.average_last)
    fade = evaluate_path(metric, crossfade(keyframes.to(metric.device).float(), factor), settings.eval_samples,
                         torch.Generator().manual_seed(own_seed + 1), chunk_size=settings.chunk_size)
    return WindowResult(window, result.frames, result.distances, result.half_widths, result.energy, fade.energy,
                        result.samples, time.perf_counter() - started, result.resumed_from, result.energy_history)

