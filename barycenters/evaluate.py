"""A seeded many-sample estimate of the barycenter objective, comparable across steps and runs.

Every call draws the *same* ensemble samples (its generator is re-seeded from ``seed``), so two evaluations
differ only because the image differs: progress is measured with common random numbers, not with the noise of
the per-step loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .step import draw_sample, has_solver_layer


@dataclass
class Evaluation:
    """The objective at one step.

    Attributes:
        step: completed solver steps when it was taken.
        objective: ``sum_i w_i * d(x, x_i)^p`` with ``d`` estimated from ``samples`` draws (>= 0).
        distances: ``[N]`` estimated distances ``d(x, x_i)``.
        samples: ensemble draws per distance (1 for deterministic metrics).
    """

    step: int
    objective: float
    distances: list[float]
    samples: int

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "objective": self.objective, "distances": self.distances, "samples": self.samples}


@torch.no_grad()
def evaluate_objective(
    metric: Any,
    x: torch.Tensor,
    references: torch.Tensor,
    weights: torch.Tensor,
    power: float,
    samples: int = 32,
    seed: int = 0,
    step: int = 0,
    batch: int = 8,
    chunk_size: int = 16,
) -> Evaluation:
    """Estimate ``sum_i weights[i] * d(x, references[i])^power`` with a fixed, seeded set of draws.

    Args:
        metric: an :class:`elpips.Metric` or a plain distance function (averaged over ``samples`` calls under
            torch's global RNG, seeded and restored around the call).
        x: ``[1, 3, H, W]`` in [0, 1].
        references: ``[N, 3, H, W]`` in [0, 1], same device.
        weights: ``[N]`` non-negative.
        power: ``p``.
        samples: ensemble draws per distance (deterministic metrics use 1).
        seed: seeds the draws; equal seeds give equal draws.
        step: recorded in the result.
        batch: draws evaluated together (memory: ``batch * chunk_size`` images per forward pass).
        chunk_size: references per forward pass.
    """
    if samples < 1:
        raise ValueError(f"eval samples must be at least 1, got {samples}")
    x = x.detach()
    if not has_solver_layer(metric):
        totals = _plain_distances(metric, x, references, samples, seed)
    else:
        if not getattr(metric, "is_stochastic", True):
            samples = 1
        totals = torch.zeros(references.shape[0], dtype=torch.float64)  # CPU float64: MPS has no float64
        generator = torch.Generator().manual_seed(int(seed))
        height, width = x.shape[-2:]
        done = 0
        while done < samples:
            draws = min(batch, samples - done)
            sample = draw_sample(metric, draws, height, width, generator)
            x_features = metric.features(x.expand(draws, -1, -1, -1), sample)
            for start in range(0, references.shape[0], chunk_size):
                grouped = references[start:start + chunk_size].unsqueeze(1).expand(-1, draws, -1, -1, -1)
                distances = metric.distance_between(x_features, metric.features(grouped, sample))  # [c, draws]
                totals[start:start + chunk_size] += distances.sum(dim=1).cpu().double()
            done += draws
        totals = totals / samples
    objective = float((weights.detach().cpu().double() * totals.pow(power)).sum())
    return Evaluation(step=step, objective=objective, distances=totals.tolist(), samples=samples)


def _plain_distances(metric: Any, x: torch.Tensor, references: torch.Tensor, samples: int,
                     seed: int) -> torch.Tensor:
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        count = references.shape[0]
        total = torch.zeros(count, dtype=torch.float64)
        for _ in range(samples):
            total += metric(x.expand(count, -1, -1, -1), references).detach().cpu().double()
    return total / samples
