"""What the frozen backbone contributes to a 2AFC triplet: per-channel mean squared feature differences.

A distance is linear in the linear weights: ``d(x, y) = sum_l sum_c w_lc mean_pixels((u_lc(x) - u_lc(y))^2)`` with
``u`` the unit-normalised taps (docs: README, "Python API"). So for one triplet and one ensemble sample everything
the network computes is two vectors of ``sum_l C_l`` numbers, the *reductions* of ``(ref, p0)`` and
``(ref, p1)``; ``reductions @ w`` gives both distances for any weights ``w``, and the mean of the reductions over
``n`` samples gives the ``n``-sample E-LPIPS distances. Training computes them once per batch without a graph.

Randomness and processes: the triplets are cut into chunks of ``chunk_size``; each chunk draws its ensemble sample
from its own generator (seeded by the caller per chunk), so the reductions do not depend on which process computes
which chunk. Inside a ``torch.distributed`` group each rank computes its round-robin share and a sum over ranks
(zeros elsewhere, so the sum is exact) gives every rank the whole batch, bit for bit what one process computes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from elpips import distributed
from elpips._features import feature_network
from elpips.distance import normalize_channels, scale_input
from elpips.metric import EnsembleSample, Features, Metric

from .triplet_reader import TripletBatch


class TripletSource(Protocol):
    """What training reads: ``len(source)`` triplets, ``source.categories[i]`` the category of triplet ``i``,
    ``source.load(indices)`` a :class:`~elpips.experiments.triplet_reader.TripletBatch` of those triplets."""

    categories: list[str]

    def __len__(self) -> int: ...

    def load(self, indices: Sequence[int]) -> TripletBatch: ...


def tap_channels(metric: Metric) -> list[int]:
    """Channels of each tap of ``metric`` (the lengths of its linear weights); ``ValueError`` for ``l2``."""
    if metric.backbone is None:
        raise ValueError(f"{metric.name} has no network taps and no linear weights to train")
    return list(metric.backbone.tap_channels)


def pair_reductions(reference: Features, candidates: Features) -> torch.Tensor:
    """Per-channel pixel means of ``(u(p_i) - u(ref))^2``.

    Args:
        reference: normalised taps ``[B, C_l, h_l, w_l]`` of the references.
        candidates: normalised taps ``[2, B, C_l, h_l, w_l]`` of p0 and p1.

    Returns:
        ``[B, 2, sum_l C_l]`` float32 (row 0 for p0, row 1 for p1), taps concatenated in order.
    """
    parts = [(candidate - tap).square().mean(dim=(-2, -1))
             for tap, candidate in zip(reference, candidates, strict=False)]
    return torch.cat(parts, dim=-1).transpose(0, 1)  # [2, B, sum C] -> [B, 2, sum C]


def _untransformed_features(metric: Metric, images: torch.Tensor) -> Features:
    """Normalised taps of ``images`` ``[(G,) B, 3, H, W]`` through ``metric``'s network without the ensemble's input
    transformation and dropout (E-LPIPS' network as one fixed function)."""
    shape = images.shape[:-3]
    taps = feature_network(metric)(scale_input(images.reshape(-1, *images.shape[-3:])), None)
    return [normalize_channels(tap).reshape(*shape, *tap.shape[1:]) for tap in taps]


def triplet_reductions(metric: Metric, batch: TripletBatch, samples: int = 1,
                       generator: torch.Generator | None = None, ensemble: bool = True) -> torch.Tensor:
    """``[B, 2, sum_l C_l]`` reductions of ``batch`` on the CPU, averaged over ``samples`` ensemble samples
    (E-LPIPS; every sample shared by ref, p0 and p1). ``ensemble=False`` evaluates E-LPIPS' network without
    transformations and dropout; deterministic metrics ignore both.

    The ``samples * B`` rows of one stratified sample go through the network in passes within the metric's memory
    budget (:meth:`Metric.images_per_pass`) exactly as :meth:`Metric.compare` takes them (later passes draw fresh
    dropout masks), so ``reductions @ weights`` are the distances ``compare`` gives with the same generator.
    """
    images = torch.stack([batch.ref, batch.p0, batch.p1]).to(metric.device)  # [3, B, 3, H, W]
    count, height, width = images.shape[1], images.shape[-2], images.shape[-1]
    stochastic = metric.is_stochastic and ensemble
    total = samples * count if stochastic else count
    capacity = metric.images_per_pass(height, width, images.dtype)
    rows_per_pass = total if 3 * total <= capacity else max(1, min(total, capacity // 2))
    sample = metric.sample(total, height, width, generator) if stochastic else None
    generator = metric.generator if generator is None else generator
    parts = []
    with torch.no_grad():
        for start in range(0, total, rows_per_pass):
            stop = min(start + rows_per_pass, total)
            rows = torch.arange(start, stop, device=images.device) % count
            part = _pass_sample(metric, sample, start, stop, total, generator) if sample is not None else None
            reference = _pass_features(metric, images[0][rows], part, ensemble)
            candidates = _pass_features(metric, images[1:][:, rows], part, ensemble)
            parts.append(pair_reductions(reference, candidates).cpu())
    reductions = torch.cat(parts)
    return reductions.reshape(samples, count, 2, -1).mean(dim=0) if stochastic else reductions


def _pass_features(metric: Metric, images: torch.Tensor, part: EnsembleSample | None, ensemble: bool) -> Features:
    if metric.is_stochastic and not ensemble:
        return _untransformed_features(metric, images)
    return metric.features(images, part)


def _pass_sample(metric: Metric, sample: EnsembleSample, start: int, stop: int, total: int,
                 generator: torch.Generator) -> EnsembleSample:
    """Rows ``start..stop-1`` of ``sample``: the first pass keeps its dropout masks, later ones draw fresh masks
    (as :meth:`Metric.compare` does)."""
    if (start, stop) == (0, total):
        return sample
    rows = None if sample.transform is None else sample.transform.rows(start, stop)  # None: dropout only
    if start == 0 or sample.dropout is None:
        return EnsembleSample(rows, sample.dropout)
    return metric.sample_for(rows, generator=generator)


def sharded_reductions(metric: Metric, source: TripletSource, indices: Sequence[int], chunk_size: int,
                       chunk_seed: Callable[[int], int], samples: int = 1,
                       ensemble: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Reductions ``[B, 2, sum_l C_l]`` and judgements ``[B]`` (float64) of triplets ``indices`` of ``source``.

    Chunk ``k`` (triplets ``k * chunk_size ...``) draws its samples from ``torch.Generator().manual_seed(
    chunk_seed(k))``. Under a process group every rank computes its round-robin share of the chunks and every
    rank returns the whole result (call it on every rank with the same arguments); an error on any rank is
    raised on every rank.
    """
    total, width = len(indices), sum(tap_channels(metric))
    reductions = torch.zeros(total, 2, width)
    judge = torch.zeros(total, dtype=torch.float64)
    chunks = list(enumerate(range(0, total, chunk_size)))
    failure = None
    try:
        for index, start in distributed.round_robin(chunks, *distributed.rank_and_world()):
            stop = min(start + chunk_size, total)
            batch = source.load(indices[start:stop])
            generator = torch.Generator().manual_seed(chunk_seed(index))
            reductions[start:stop] = triplet_reductions(metric, batch, samples, generator, ensemble)
            judge[start:stop] = batch.judge
    except Exception as error:  # reported on every rank below instead of leaving the others waiting
        if not distributed.is_distributed():
            raise
        failure = error
    if distributed.is_distributed():
        distributed.raise_on_every_rank(failure)
        reductions = distributed.all_reduce_sum(reductions)
        judge = distributed.all_reduce_sum(judge)
    return reductions, judge

