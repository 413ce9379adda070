"""One ensemble sample per solver step, stratified across consecutive steps (``docs/algorithm.md``, section 3).

A solver that draws one single-image ensemble sample per step (the barycenter and geodesic solvers at
``samples_per_step=1``) sees every flip, permutation, colour factor and scale level, but independently from step
to step. :class:`StratifiedStream` hands out one record per step instead, so that over every window of ``window``
consecutive steps (steps ``0..W-1``, ``W..2W-1``, ...) the ensemble is stratified as a batch of ``W`` images is:

* the 8 geometric variants (4 flip codes x swap): the swaps alternate in a shuffled balanced sequence (each value
  at most ``ceil(W/2)`` times), and within the steps of each swap value the flip codes are a shuffled cycle (each
  at most ``ceil(n/4)`` times among those ``n`` steps); with ``W = 8`` every variant occurs exactly once;
* the 6 colour permutations: a shuffled cycle (each at most ``ceil(W/6)`` times);
* the colour factors: each channel's ``u`` (factor ``0.2 + 0.8 u``) falls once into each stratum ``[i/W, (i+1)/W)``;
* the scale levels: a stratified draw, ``u_i`` in stratum ``i`` of ``[0, 1)`` (strata in random step order)
  mapped through the cumulative ``1/s^2`` probabilities, so each level occurs ``W p_s`` times up to rounding.

Offsets and scale offsets stay independent, as in a batch. Every step's record on its own has exactly the
distribution of ``sample_transform(1, ...)``: each stratified sequence is a shuffled cycle or a randomly ordered
set of strata, so every position is marginally uniform (resp. distributed as ``p_s``), and the fields are drawn
independently of each other. Each step also gets its own dropout-mask seed. A window's content is a fixed function
of ``(seed, window index, number of scale levels)``, so a resumed run needs only the seed and the step.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import torch
from elpips.dropout import DropoutMasks
from elpips.ensemble import DEFAULT_MAX_OFFSET, EnsembleConfig
from elpips.transforms import (
    COLOR_MIN,
    COLOR_RANGE,
    PERMUTATIONS,
    TransformRecord,
    default_scale_levels,
    scale_level_probabilities,
    shuffled_cycle,
)
from elpips.validation import check_positive_int

if TYPE_CHECKING:
    from elpips.metric import EnsembleSample, Metric

DEFAULT_WINDOW = 24
"""Steps per window: 24 = lcm(8 geometric variants, 6 permutations), so a full window holds every variant 3 times
and every permutation 4 times."""

STREAM_MODES = ("independent", "stratified")
"""Values of the solvers' ``ensemble_stream`` option."""


def check_stream_mode(mode: str, samples_per_step: int) -> str:
    """Validate a solver's ``ensemble_stream`` option; the stratified stream hands out one sample per step."""
    if mode not in STREAM_MODES:
        raise ValueError(f"ensemble_stream must be one of {', '.join(STREAM_MODES)}, got {mode!r}")
    if mode == "stratified" and samples_per_step != 1:
        raise ValueError(f"ensemble_stream='stratified' draws one ensemble sample per step; "
                         f"samples_per_step must be 1, got {samples_per_step}")
    return mode


def stratified_levels(count: int, scale_levels: int, generator: torch.Generator) -> torch.Tensor:
    """``[count]`` long scale levels in ``1..scale_levels``, each marginally distributed as ``p_s ~ 1/s^2``, and
    stratified: ``u_i = (stratum_i + jitter_i) / count`` with the strata in random order, level = inverse CDF."""
    strata = torch.randperm(count, generator=generator).double()
    u = (strata + torch.rand(count, generator=generator, dtype=torch.float64)) / count
    cumulative = torch.cumsum(scale_level_probabilities(scale_levels), 0)
    index = torch.searchsorted(cumulative, u, right=True)
    return index.clamp(max=scale_levels - 1) + 1


def _stratified_unit(count: int, channels: int, generator: torch.Generator) -> torch.Tensor:
    """``[count, channels]`` float64 in ``[0, 1)``: each column has one value per stratum, rows in random order."""
    strata = torch.arange(count, dtype=torch.float64)[:, None]
    u = (strata + torch.rand(count, channels, generator=generator, dtype=torch.float64)) / count
    order = torch.stack([torch.randperm(count, generator=generator) for _ in range(channels)], dim=1)
    return torch.gather(u, 0, order)


def draw_window(window: int, scale_levels: int, generator: torch.Generator,
                color_mode: str = "color") -> tuple[list[TransformRecord], list[int]]:
    """``window`` single-image records stratified across the window (see the module docstring), and a dropout
    seed per record."""
    levels = stratified_levels(window, scale_levels, generator)
    swap = shuffled_cycle(window, 2, generator)
    flip = torch.empty(window, dtype=torch.long)
    for value in (0, 1):
        rows = torch.nonzero(swap == value).flatten()
        if len(rows):
            flip[rows] = shuffled_cycle(len(rows), 4, generator)
    permutation = shuffled_cycle(window, len(PERMUTATIONS), generator)
    channels = 3 if color_mode == "color" else 1
    color = (COLOR_MIN + COLOR_RANGE * _stratified_unit(window, channels, generator)).float().expand(window, 3)
    offset = torch.randint(0, DEFAULT_MAX_OFFSET + 1, (window, 2), generator=generator)
    scale_offset = torch.floor(torch.rand(window, 2, generator=generator, dtype=torch.float64)
                               * levels[:, None].double()).long()
    seeds = torch.randint(0, 2**62, (window,), generator=generator).tolist()
    records = [TransformRecord(scale_level=int(levels[i]), scale_offset=(int(scale_offset[i, 0]),
                                                                          int(scale_offset[i, 1])),
                               offset=offset[i:i + 1].clone(), flip=flip[i:i + 1].clone(), swap=bool(swap[i]),
                               permutation=PERMUTATIONS[permutation[i:i + 1]], color=color[i:i + 1].contiguous())
               for i in range(window)]
    return records, [int(seed) for seed in seeds]


class StratifiedStream:
    """Single-image ensemble samples for steps ``0, 1, 2, ...``, stratified over windows of ``window`` steps.

    Args:
        seed: any integer; the stream is a fixed function of it (and of the step and number of scale levels).
        window: steps per stratified window ``W >= 1`` (default :data:`DEFAULT_WINDOW`).
        color_mode: ``"color"`` (a factor per channel) or ``"brightness"`` (one factor per image).
    """

    def __init__(self, seed: int, window: int = DEFAULT_WINDOW, color_mode: str = "color") -> None:
        check_positive_int(window, "window")
        if color_mode not in ("color", "brightness"):
            raise ValueError(f"color_mode must be 'color' or 'brightness', got {color_mode!r}")
        self.seed = int(seed)
        self.window = window
        self.color_mode = color_mode
        self._cached: tuple[tuple[int, int], tuple[list[TransformRecord], list[int]]] | None = None

    def _window(self, index: int, scale_levels: int) -> tuple[list[TransformRecord], list[int]]:
        key = (index, scale_levels)
        if self._cached is None or self._cached[0] != key:
            digest = hashlib.blake2b(f"{self.seed}:{index}:{scale_levels}".encode(), digest_size=8).digest()
            generator = torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))
            self._cached = (key, draw_window(self.window, scale_levels, generator, self.color_mode))
        return self._cached[1]

    def record(self, step: int, scale_levels: int) -> TransformRecord:
        """The transform of step ``step >= 0`` (a record for one image) with levels ``1..scale_levels``."""
        if step < 0 or scale_levels < 1:
            raise ValueError(f"step must be >= 0 and scale_levels >= 1, got {step} and {scale_levels}")
        return self._window(step // self.window, scale_levels)[0][step % self.window]

    def dropout_seed(self, step: int, scale_levels: int) -> int:
        """The dropout-mask seed of step ``step``."""
        return self._window(step // self.window, scale_levels)[1][step % self.window]

    def sample(self, metric: Metric, step: int, height: int, width: int) -> EnsembleSample:
        """Step ``step``'s :class:`~elpips.EnsembleSample` for ``metric`` and ``height x width`` images (the
        metric's own empty sample for deterministic metrics)."""
        from elpips.metric import EnsembleSample

        if not metric.is_stochastic:
            return metric.sample(1, height, width)
        _check_full_ensemble(metric.ensemble)
        scale_levels = metric.scale_levels or default_scale_levels(height, width)
        dropout = None
        if metric.ensemble.dropout:
            keep = metric.dropout_keep
            assert keep is not None  # dropout is on: the ensemble filled in its keep probability
            dropout = DropoutMasks(self.dropout_seed(step, scale_levels), keep)
        return EnsembleSample(self.record(step, scale_levels), dropout)


def _check_full_ensemble(ensemble: EnsembleConfig) -> None:
    """The stream stratifies every piece of the ensemble: a metric with pieces switched off (or crop mode, another
    offset) would be handed transforms it does not use."""
    settings, full = ensemble.as_dict(), EnsembleConfig().as_dict()
    for free in ("scale_levels", "dropout_keep"):
        settings.pop(free, None)
        full.pop(free, None)
    if settings != full:
        raise ValueError("ensemble_stream='stratified' draws the full E-LPIPS ensemble; this metric's ensemble is "
                         f"{ensemble.summary()}: use "
                         "ensemble_stream='independent'")
