"""Sequential Monte Carlo estimation of E-LPIPS with a 95% confidence half-width (``docs/algorithm.md#estimate``)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

Z_95 = 1.96
"""The two-sided 95% quantile of the standard normal distribution (the reference's confidence factor)."""
PROGRESS_INTERVAL_S = 10.0
"""Seconds between the plain progress lines of ``progress=True``."""


def _values(tensor: torch.Tensor, shown: int = 4) -> str:
    values = tensor.detach().flatten().tolist()
    text = ", ".join(f"{value:.4g}" for value in values[:shown]) + (", ..." if len(values) > shown else "")
    return text if tensor.dim() == 0 else f"[{text}]"


@dataclass(repr=False)
class Estimate:
    """A Monte Carlo estimate.

    Attributes:
        mean: the estimated distances (shape of one draw, e.g. ``[N]`` or ``[M, N]``).
        half_width: 95% confidence half-width ``1.96 * std / sqrt(samples)`` (0 for deterministic metrics).
        samples: number of ensemble samples used per distance.
        draws: the individual sample distances ``[samples, ...]`` (for paired comparisons), if kept.
    """

    mean: torch.Tensor
    half_width: torch.Tensor
    samples: int
    draws: torch.Tensor | None = None

    def __iter__(self):
        """Unpacks as ``mean, half_width, samples = metric.estimate(x, y)``."""
        return iter((self.mean, self.half_width, self.samples))

    def __repr__(self) -> str:
        """Short: the means, half-widths and sample count (never the draws)."""
        return (f"Estimate(mean={_values(self.mean)}, half_width={_values(self.half_width)}, "
                f"samples={self.samples})")


class PlainProgress:
    """``progress=True``: a plain line on stderr every :data:`PROGRESS_INTERVAL_S` seconds of a long estimate."""

    def __init__(self, max_samples: int) -> None:
        self.max_samples = max_samples
        self.started = self.last = time.monotonic()

    def __call__(self, estimate: Estimate) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_INTERVAL_S:
            return
        self.last = now
        print(f"estimate: {estimate.samples}/{self.max_samples} samples, mean {_values(estimate.mean)}, "
              f"half-width {float(estimate.half_width.max()):.3g}, {now - self.started:.0f} s", file=sys.stderr,
              flush=True)


def summarize(draws: torch.Tensor) -> Estimate:
    """Mean and 95% half-width of ``draws`` ``[k, ...]`` (k samples along dim 0)."""
    count = draws.shape[0]
    mean = draws.mean(dim=0)
    if count < 2:
        return Estimate(mean, torch.zeros_like(mean), count, draws)
    std = draws.std(dim=0, unbiased=True)
    return Estimate(mean, Z_95 * std / count**0.5, count, draws)


def sequential_estimate(
    draw: Callable[[int], torch.Tensor],
    abs_tol: float = 0.01,
    rel_tol: float = 0.025,
    max_samples: int = 5000,
    batch: int = 10,
    progress: Callable[[Estimate], None] | bool | None = None,
) -> Estimate:
    """Draw batches of samples until every half-width is below ``abs_tol`` and ``rel_tol * mean``.

    Args:
        draw: ``draw(k)`` returns ``[k, ...]`` independent (or stratified) sample distances.
        abs_tol, rel_tol: the reference's stopping bounds (0.01 absolute, 2.5% relative).
        max_samples: cap on the number of samples.
        batch: samples per draw.
        progress: called with the running estimate after every batch; ``True``: a plain line on stderr every
            :data:`PROGRESS_INTERVAL_S` seconds.
    """
    if batch < 1 or max_samples < 1:
        raise ValueError("batch and max_samples must be at least 1")
    if progress is True:
        progress = PlainProgress(max_samples)
    chunks: list[torch.Tensor] = []
    total = 0
    while True:
        take = min(batch, max_samples - total)
        chunks.append(draw(take).detach().to(torch.float64))
        total += take
        estimate = summarize(torch.cat(chunks))
        if callable(progress):
            progress(estimate)
        converged = bool(((estimate.half_width <= abs_tol) & (estimate.half_width <= rel_tol * estimate.mean)).all())
        if (converged and total >= 2) or total >= max_samples:
            return estimate


def estimate_distances(draw: Callable[[int], torch.Tensor], stochastic: bool, abs_tol: float = 0.01,
                       rel_tol: float = 0.025, max_samples: int = 5000, batch: int = 10,
                       progress: Callable[[Estimate], None] | bool | None = None) -> Estimate:
    """:func:`sequential_estimate` of ``draw``; a deterministic metric's (``stochastic=False``) is one draw
    ``[1, ...]`` with half-width 0."""
    if not stochastic:
        distances = draw(1).double()
        return Estimate(distances[0], torch.zeros_like(distances[0]), 1, distances)
    return sequential_estimate(draw, abs_tol, rel_tol, max_samples, batch, progress)
