"""Perceptual barycenters: ``argmin_x sum_i w_i d(x, x_i)^p`` under E-LPIPS (or LPIPS, or L2).

    from elpips.barycenters import solve
    result = solve(images, metric, steps=2000, generator=0)   # images: [N, 3, H, W] in [0, 1]
    result.image                                                # [1, 3, H, W] in [1e-5, 1 - 1e-5]

Modules: :mod:`.solver` (the loop, checkpoints, resume), :mod:`.step` (one shared-feature gradient step),
:mod:`.evaluate` (seeded many-sample objective), :mod:`.perturb` (inputs of the paper's demonstrations),
:mod:`.options` (input checks). Option checks, schedules, checkpoints and progress are
:mod:`elpips.solver`'s, shared with the geodesic solver.
"""

from elpips.solver import CLIP_HIGH, CLIP_LOW

from .evaluate import Evaluation, evaluate_objective
from .perturb import noisy_copies, shift_image, shifted_copies
from .solver import REFERENCE_STEPS, BarycenterResult, BarycenterStepInfo, solve
from .step import draw_sample, shared_step

StepInfo = BarycenterStepInfo
"""The barycenter's :class:`~elpips.solver.StepInfo` (the name this package has always exported)."""

__all__ = [
    "CLIP_HIGH",
    "CLIP_LOW",
    "REFERENCE_STEPS",
    "BarycenterResult",
    "BarycenterStepInfo",
    "Evaluation",
    "StepInfo",
    "draw_sample",
    "evaluate_objective",
    "noisy_copies",
    "shared_step",
    "shift_image",
    "shifted_copies",
    "solve",
]
