"""Discrete perceptual geodesics: paths ``x_0 = A, x_1 .. x_{K-1}, x_K = B`` (through more keyframes if given)
whose interior frames minimise ``sum_k d(x_k, x_{k+1})^2`` under E-LPIPS, LPIPS or L2.

    from elpips.geodesics import solve
    result = solve([a, b], elpips.Metric("elpips-vgg"), frames=10, steps=500)
    result.frames.shape                       # [10, 3, H, W], a and b unchanged at both ends

Modules: :mod:`.solver` (the phases of a solve), :mod:`.energy` (one shared-sample step of the path energy),
:mod:`.evaluate` (many-sample distances along a path), :mod:`.levels` (coarse-to-fine stages), :mod:`.stage`
(the path at one stage), :mod:`.path` (frame counts, blends, resampling), :mod:`.options` (input checks, the
default schedule). Inside a ``torch.distributed`` process group, ``solve(..., shard=True)`` splits the frames
over the ranks (:mod:`.sharded`). Option checks, schedules, checkpoints and progress are :mod:`elpips.solver`'s,
shared with the barycenter solver.
"""

from .clip import SolveSettings, Window, WindowResult, crossfade, output_count, plan_windows, solve_window
from .energy import path_step
from .evaluate import PathEvaluation, evaluate_path
from .levels import Level, level_starts, plan_levels, time_ladder
from .options import DEFAULT_BASE_RATE, geodesic_learning_rate
from .path import (
                   downscale,
                   free_mask,
                   keyframe_indices,
                   linear_path,
                   resample_path,
                   segment_intervals,
                   subdivide,
                   upscale_path,
)
from .sharded import PathShard, path_shard, sharded_path_step
from .solver import GeodesicResult, GeodesicStepInfo, solve

StepInfo = GeodesicStepInfo
"""The geodesic's :class:`~elpips.solver.StepInfo` (the name this package has always exported)."""

__all__ = [
    "DEFAULT_BASE_RATE",
    "GeodesicResult",
    "GeodesicStepInfo",
    "Level",
    "PathEvaluation",
    "PathShard",
    "SolveSettings",
    "StepInfo",
    "Window",
    "WindowResult",
    "crossfade",
    "downscale",
    "evaluate_path",
    "free_mask",
    "geodesic_learning_rate",
    "keyframe_indices",
    "level_starts",
    "linear_path",
    "output_count",
    "path_shard",
    "path_step",
    "plan_windows",
    "plan_levels",
    "resample_path",
    "segment_intervals",
    "sharded_path_step",
    "solve",
    "solve_window",
    "subdivide",
    "time_ladder",
    "upscale_path",
]
