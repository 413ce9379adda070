"""The gradient of one solver step: ``x`` against many references under one shared ensemble sample.

The step objective is ``sum_j c_j * d_T(x, r_j)^p`` for chosen references ``r_j`` with coefficients ``c_j``. ``x``'s
features are computed once, with a graph; the references' features are computed in chunks without one and
compared with ``x``'s. The gradient of each chunk's terms with respect to ``x``'s *features* is accumulated,
then a single backward pass takes it through the network to ``x``. A step over ``k`` references therefore costs
``1 + k`` forward passes and one backward pass (a per-pair loop costs ``2k`` forwards and ``k`` backwards), and
memory is bounded by the chunk size, not by ``k``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

DistanceFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A plain differentiable distance ``d(x, y) -> [B]`` for ``[B, 3, H, W]`` batches (``Metric`` call signature)."""


def has_solver_layer(metric: Any) -> bool:
    """``True`` when ``metric`` offers ``sample``/``features``/``distance_between`` (an :class:`elpips.Metric`)."""
    return all(callable(getattr(metric, name, None)) for name in ("sample", "features", "distance_between"))


def draw_sample(metric: Any, samples: int, height: int, width: int, generator: torch.Generator) -> Any:
    """One ensemble sample for ``samples`` copies of an image (``None`` for plain distance functions)."""
    if not has_solver_layer(metric):
        return None
    return metric.sample(samples, height, width, generator=generator)


def _chunks(count: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, count)) for start in range(0, count, size)]


def shared_step(
    metric: Any,
    x: torch.Tensor,
    references: torch.Tensor,
    coefficients: torch.Tensor,
    power: float,
    sample: Any,
    samples: int = 1,
    chunk_size: int = 16,
) -> torch.Tensor:
    """Accumulate into ``x.grad`` the gradient of ``sum_j coefficients[j] * d(x, references[j])^power``.

    ``d`` is the mean over ``samples`` stratified ensemble draws of one sample (``sample``, from
    :func:`draw_sample` for ``samples`` images), the same draws for every reference.

    Args:
        metric: an :class:`elpips.Metric` (shared features) or a plain :data:`DistanceFn`.
        x: ``[1, 3, H, W]`` leaf tensor in [0, 1] with ``requires_grad=True``, on the metric's device.
        references: ``[k, 3, H, W]`` in [0, 1], same device, no grad.
        coefficients: ``[k]`` non-negative weights of the terms.
        power: ``p >= 1``.
        sample: the ensemble sample (ignored by deterministic metrics and plain distance functions).
        samples: ensemble draws per reference, ``>= 1``.
        chunk_size: references per chunk (bounds memory).

    Returns:
        ``[k]`` detached distances ``d(x, references[j])`` (means over the draws).
    """
    if not has_solver_layer(metric):
        return _plain_step(metric, x, references, coefficients, power, samples, chunk_size)
    tiled = x.expand(samples, -1, -1, -1)
    x_features = metric.features(tiled, sample)
    leaves = [feature.detach().requires_grad_(True) for feature in x_features]
    feature_grads = [torch.zeros_like(feature) for feature in x_features]
    distances = []
    for part in _chunks(references.shape[0], chunk_size):
        grouped = references[part].unsqueeze(1).expand(-1, samples, -1, -1, -1)  # [c, S, 3, H, W]
        with torch.no_grad():
            reference_features = metric.features(grouped, sample)
        chunk_distances = metric.distance_between(leaves, reference_features).mean(dim=1)  # [c]
        loss = (coefficients[part] * chunk_distances.pow(power)).sum()
        for total, grad in zip(feature_grads, torch.autograd.grad(loss, leaves), strict=False):
            total.add_(grad)
        distances.append(chunk_distances.detach())
    torch.autograd.backward(x_features, feature_grads)
    return torch.cat(distances)


def _plain_step(metric: DistanceFn, x: torch.Tensor, references: torch.Tensor, coefficients: torch.Tensor,
                power: float, samples: int, chunk_size: int) -> torch.Tensor:
    """:func:`shared_step` for a plain distance function: one batched call (and backward) per chunk."""
    distances = []
    for part in _chunks(references.shape[0], chunk_size):
        chunk = references[part]
        count = chunk.shape[0]
        pairs = metric(x.expand(count * samples, -1, -1, -1), chunk.repeat(samples, 1, 1, 1))
        chunk_distances = pairs.reshape(samples, count).mean(dim=0)
        (coefficients[part] * chunk_distances.pow(power)).sum().backward()
        distances.append(chunk_distances.detach())
    return torch.cat(distances)
