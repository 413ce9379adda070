"""Many-sample distances along a path: every adjacent pair's ensemble estimate with its 95% half-width."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from elpips import Metric
from elpips.estimate import Z_95

from .energy import path_step
from .sharded import PathShard, sharded_path_step


@dataclass
class PathEvaluation:
    """Many-sample distances along a path.

    Attributes:
        distances: ``[K]`` mean distance of each adjacent pair (E-LPIPS: the ensemble expectation estimate).
        half_widths: ``[K]`` 95% confidence half-widths of those means (0 for deterministic metrics).
        energy: ``sum_k distances_k^2``, the path energy under the metric.
        samples: ensemble samples used (1 for LPIPS and L2).
    """

    distances: torch.Tensor
    half_widths: torch.Tensor
    energy: float
    samples: int

    @property
    def length(self) -> float:
        """``sum_k d_k``: the path's length under the metric."""
        return float(self.distances.sum())


@torch.no_grad()
def evaluate_path(metric: Metric, path: torch.Tensor, samples: int = 32, generator: torch.Generator | None = None,
                  batch: int = 4, chunk_size: int = 8, shard: PathShard | None = None) -> PathEvaluation:
    """Estimate every adjacent distance of ``path`` ``[K+1, 3, H, W]`` with ``samples`` ensemble samples,
    each shared by all frames (``batch`` samples per forward pass, ``chunk_size`` frames at a time).
    With a :class:`~elpips.geodesics.sharded.PathShard` every rank evaluates its own pairs (collective; the
    generators must agree on every rank)."""
    if samples < 1 or batch < 1:
        raise ValueError(f"samples and batch must be >= 1, got {samples} and {batch}")
    if path.shape[0] < 2:
        raise ValueError(f"a path needs at least 2 frames, got {path.shape[0]}")
    if not metric.is_stochastic:
        samples = 1
    height, width = path.shape[-2:]
    fixed = torch.zeros(path.shape[0], dtype=torch.bool)
    fixed[1:-1] = True  # treat interior frames as "free" only for chunking; nothing builds a graph
    draws = []
    remaining = samples
    while remaining > 0:
        count = min(batch, remaining)
        sample = metric.sample(count, height, width, generator)
        if shard is None:
            draws.append(path_step(metric, path, fixed, None, sample, count, chunk_size, backward=False))
        else:
            draws.append(sharded_path_step(metric, path, fixed, None, shard, sample, count, chunk_size,
                                           backward=False))
        remaining -= count
    values = torch.cat(draws, dim=1).cpu().double()  # [K, samples]; on the CPU: MPS has no float64
    mean = values.mean(dim=1)
    half = Z_95 * values.std(dim=1, unbiased=True) / math.sqrt(samples) if samples > 1 else torch.zeros_like(mean)
    return PathEvaluation(mean.float().cpu(), half.float().cpu(), float((mean**2).sum()), samples)
