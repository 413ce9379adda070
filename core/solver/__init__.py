"""The layer both solvers stand on: option checks, learning-rate schedules, checkpoints, progress.

The barycenter and geodesic solvers (:mod:`elpips.barycenters`, :mod:`elpips.geodesics`) share one convention
through this package: the inputs and the metric positional, then keyword-only options with the same names in
the same order (``steps``, ``lr=``, ``init``, ``generator``, ``checkpoint``, ``checkpoint_every``, ``resume``,
``callback``, ``progress``, ``device``, ...; ``generator=None`` is a fresh seed, never the metric's generator,
and a solve never moves or changes its metric: :mod:`.metrics`), the same :class:`StepInfo` field names, checkpoint
format tags ``"elpips-<solver>/<version>"`` written atomically under one file name in run folders, one clip range
for the iterates and one progress report. Nothing here knows the metric's internals or writes anything but
checkpoints.
"""

from .checkpoint import (
                         CHECKPOINT_NAME,
                         check_format,
                         checkpoint_format,
                         generator_state,
                         load_checkpoint,
                         restore_generator,
                         save_checkpoint,
)
from .options import CLIP_HIGH, CLIP_LOW, clip_, make_generator
from .progress import PLAIN_INTERVAL_S, ProgressReport, StepInfo, chain, phase, reporting
from .schedules import REFERENCE_BASE_RATE, Schedule, learning_rate_schedule, reference_learning_rate

__all__ = [
    "CHECKPOINT_NAME",
    "CLIP_HIGH",
    "CLIP_LOW",
    "REFERENCE_BASE_RATE",
    "PLAIN_INTERVAL_S",
    "ProgressReport",
    "Schedule",
    "StepInfo",
    "chain",
    "check_format",
    "checkpoint_format",
    "clip_",
    "generator_state",
    "learning_rate_schedule",
    "load_checkpoint",
    "make_generator",
    "reference_learning_rate",
    "phase",
    "reporting",
    "restore_generator",
    "save_checkpoint",
]
