"""How :class:`~elpips.Metric` evaluates distances within its memory budget (``docs/algorithm.md#memory``).

* Passes: the rows of one stratified sample (``n`` samples of ``N`` pairs, or of ``M`` candidates against a
  reference) go through the network in ranges of at most :meth:`~elpips.Metric.images_per_pass` images; the
  first range keeps the sample's dropout masks, later ranges draw fresh ones.
* Tiles: a pair over the budget, in a call that needs no gradient, is evaluated row by row and tile by tile
  (:mod:`elpips.tiling`).
* Activation checkpointing (``checkpoint_activations=True``): one checkpointed segment per tap when autograd
  needs the graph.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from torch.utils.checkpoint import checkpoint

from ._features import Features, dropout_masks, feature_network, network_input, network_stage, normalized_tap
from .distance import tap_distance
from .dropout import DropoutMasks
from .memory import default_memory_budget, images_per_pass
from .precision import gradient_scale
from .tiling import BlockDropoutMasks, core_size, tiled_distance
from .transforms import TransformRecord

if TYPE_CHECKING:
    from .metric import EnsembleSample, Metric


def pass_ranges(total: int, per_pass: int) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges covering ``0..total-1`` in pieces of at most ``per_pass``."""
    return [(start, min(total, start + per_pass)) for start in range(0, total, per_pass)]


def memory_budget(metric: Metric) -> int:
    """The bytes one network pass may use: the metric's ``memory_budget``, else the device's default."""
    return default_memory_budget(metric.device) if metric.memory_budget is None else metric.memory_budget


def pass_capacity(metric: Metric, height: int, width: int, dtype: torch.dtype) -> int:
    """:meth:`Metric.images_per_pass`: images of ``height x width`` (plus the ensemble's offset padding, none in
    crop mode) that one network pass may take within :func:`memory_budget`, at least 1."""
    pad = 0 if metric.ensemble.crop else metric.ensemble.padding
    element_size = torch.empty((), dtype=dtype).element_size()
    return images_per_pass(memory_budget(metric), metric.config.backbone, (height + pad) * (width + pad),
                           element_size)


def pass_sample(metric: Metric, sample: EnsembleSample, start: int, stop: int,
                generator: torch.Generator) -> EnsembleSample:
    """The part of ``sample`` for rows ``start..stop-1``: the first pass keeps the sample's own dropout
    masks, later passes draw fresh ones (masks are drawn per pass shape), or none where the sample has none."""
    rows = None if sample.transform is None else sample.transform.rows(start, stop)
    if start == 0 or sample.dropout is None:
        return replace(sample, transform=rows)
    return replace(sample, transform=rows, dropout=dropout_masks(metric, generator, True))


# -- activation checkpointing ----------------------------------------------------------------------------------
def checkpointing(metric: Metric, *inputs: torch.Tensor) -> bool:
    """Whether this evaluation recomputes activations in the backward pass (see ``checkpoint_activations``)."""
    return (metric.checkpoint_activations and metric.backbone is not None and torch.is_grad_enabled()
            and any(tensor.requires_grad for tensor in inputs))


def checkpointed_distances(metric: Metric, variables: torch.Tensor, reference: torch.Tensor,
                           sample: EnsembleSample | None) -> torch.Tensor:
    """Distances ``[G, N]`` from each group of ``variables`` ``[G, N, 3, H, W]`` to ``reference``
    ``[N, 3, H, W]``, equal to ``distance_between(features(variables), features(reference))``.

    One checkpointed segment per tap (network stage, normalisation, tap distance): the backward pass keeps
    only the raw taps of the variables and recomputes the rest. A reference that needs no gradient has its
    normalised taps computed once without a graph (the usual loss case: only the model's output is
    differentiated); one that does is treated as one more group and differentiated through as well.
    """
    if reference.requires_grad:
        return _checkpointed_group_distances(metric, torch.cat([variables, reference.unsqueeze(0)]), None, sample)
    return _checkpointed_group_distances(metric, variables, metric.features(reference, sample), sample)


def _checkpointed_group_distances(metric: Metric, groups_images: torch.Tensor,
                                  reference_features: Features | None,
                                  sample: EnsembleSample | None) -> torch.Tensor:
    """See :func:`checkpointed_distances`; ``groups_images`` ``[G, N, 3, H, W]``, without ``reference_features``
    the last group is the reference. Returns ``[G, N]`` (``[G - 1, N]`` with the reference among the groups)."""
    flat, dropout, groups, batch = network_input(metric, groups_images, sample)
    backbone = feature_network(metric)
    weights = metric.linear_weights
    fused = metric._fused
    grad_scale = gradient_scale(metric.precision)

    def segment(h: torch.Tensor, stage: int, reference_tap: torch.Tensor | None):
        tap = network_stage(metric, lambda: backbone.run_stage(stage, h, dropout))
        normalized = normalized_tap(tap, fused, grad_scale)
        normalized = normalized.reshape(groups, batch, *normalized.shape[1:])
        if reference_tap is None:
            return tap, tap_distance(normalized[:-1], normalized[-1], weights[stage], fused)
        return tap, tap_distance(normalized, reference_tap, weights[stage], fused)

    total = None
    h = flat
    for stage in range(backbone.num_stages):
        reference_tap = None if reference_features is None else reference_features[stage]
        h, distance = checkpoint(segment, h, stage, reference_tap, use_reentrant=False)
        total = distance if total is None else total + distance
    assert total is not None  # a network has at least one stage
    return total


# -- one pass ----------------------------------------------------------------------------------------------------
def pair_distances(metric: Metric, x: torch.Tensor, y: torch.Tensor,
                   sample: EnsembleSample | None) -> torch.Tensor:
    """``[N]`` distances of ``x`` and ``y`` ``[N, 3, H, W]`` under one ``sample`` (checkpointed when asked for
    and needed)."""
    if checkpointing(metric, x, y):
        if y.requires_grad and not x.requires_grad:  # distances are symmetric in x and y: x is the variable
            x, y = y, x
        return checkpointed_distances(metric, x.unsqueeze(0), y, sample)[0]
    return metric.distance_between(metric.features(x, sample), metric.features(y, sample))


def compare_pass(metric: Metric, reference: torch.Tensor, candidates: torch.Tensor,
                 sample: EnsembleSample | None) -> torch.Tensor:
    """``[M, B]`` distances of ``candidates`` ``[M, B, 3, H, W]`` to ``reference`` ``[B, 3, H, W]`` in one pass."""
    if checkpointing(metric, reference, candidates):
        return checkpointed_distances(metric, candidates, reference, sample)
    return metric.distance_between(metric.features(candidates, sample), metric.features(reference, sample))


# -- many passes ---------------------------------------------------------------------------------------------------
def sample_distances(metric: Metric, x: torch.Tensor, y: torch.Tensor, n: int,
                     generator: torch.Generator | None, dropout: bool | None) -> torch.Tensor:
    """:meth:`Metric.sample_distances`: ``[n, N]`` for ``x``, ``y`` ``[N, 3, H, W]``, in passes of at most
    ``images_per_pass // 2`` pairs, or tile by tile for a pair over the budget."""
    batch, _, height, width = x.shape
    per_pass = max(1, metric.images_per_pass(height, width, x.dtype) // 2)  # x and y share a pass
    if tiles_needed(metric, x, y):
        return _tiled_sample_distances(metric, x, y, n, generator, dropout)
    if not metric.is_stochastic:
        distances = torch.cat([pair_distances(metric, x[start:stop], y[start:stop], None)
                               for start, stop in pass_ranges(batch, per_pass)])
        return distances.unsqueeze(0).expand(n, batch)
    total = n * batch
    sample = metric.sample(total, height, width, generator, dropout)
    if total <= per_pass:
        return pair_distances(metric, x.repeat(n, 1, 1, 1), y.repeat(n, 1, 1, 1), sample).reshape(n, batch)
    generator = metric.generator if generator is None else generator
    parts: list[torch.Tensor] = []
    for start, stop in pass_ranges(total, per_pass):
        rows = torch.arange(start, stop, device=x.device) % batch
        part = pass_sample(metric, sample, start, stop, generator)
        parts.append(pair_distances(metric, x[rows], y[rows], part))
    return torch.cat(parts).reshape(n, batch)


def compare_samples(metric: Metric, reference: torch.Tensor, candidates: torch.Tensor, n: int,
                    generator: torch.Generator | None) -> torch.Tensor:
    """:meth:`Metric.compare_samples`: ``[n, M, N]`` for ``reference`` ``[N, 3, H, W]`` and ``candidates``
    ``[M, N, 3, H, W]``. Passes over ranges of sample rows; within a range, the reference's features are computed
    once and the candidates go in groups that fit beside them."""
    count, batch, _, height, width = candidates.shape
    total = n * batch
    capacity = metric.images_per_pass(height, width, candidates.dtype)
    if tiles_needed(metric, reference, candidates):
        return _tiled_compare_samples(metric, reference, candidates, n, generator)
    sample = metric.sample(total, height, width, generator)
    if total * (count + 1) <= capacity:
        return compare_pass(metric, reference.repeat(n, 1, 1, 1), candidates.repeat(1, n, 1, 1, 1),
                            sample).reshape(count, n, batch).transpose(0, 1)
    generator = metric.generator if generator is None else generator
    rows_per_pass = max(1, min(total, capacity // 2))
    columns = []
    for start, stop in pass_ranges(total, rows_per_pass):
        rows = torch.arange(start, stop, device=reference.device) % batch
        part = pass_sample(metric, sample, start, stop, generator) if metric.is_stochastic else sample
        groups_per_pass = max(1, capacity // (stop - start) - 1)
        if checkpointing(metric, reference, candidates):
            columns.append(torch.cat([compare_pass(metric, reference[rows], candidates[first:last][:, rows], part)
                                      for first, last in pass_ranges(count, groups_per_pass)]))
            continue
        reference_features = metric.features(reference[rows], part)
        columns.append(torch.cat([
            metric.distance_between(metric.features(candidates[first:last][:, rows], part), reference_features)
            for first, last in pass_ranges(count, groups_per_pass)]))
    return torch.cat(columns, dim=1).reshape(count, n, batch).transpose(0, 1)


# -- tiles ---------------------------------------------------------------------------------------------------------
def tiles_needed(metric: Metric, *inputs: torch.Tensor) -> bool:
    """Whether one pair is over the memory budget, so that it is evaluated tile by tile (no-grad calls only:
    a differentiable call runs whole and its memory is the caller's choice). Never in the tileable mode: a tile
    has borders, a periodic image has none, so it runs whole."""
    if metric.backbone is None or metric.ensemble.tileable \
            or metric.images_per_pass(inputs[0].shape[-2], inputs[0].shape[-1], inputs[0].dtype) >= 2:
        return False
    return not (torch.is_grad_enabled() and any(tensor.requires_grad for tensor in inputs))


def tiled_pair_distance(metric: Metric, x: torch.Tensor, y: torch.Tensor, transform: TransformRecord | None,
                        masks: DropoutMasks | None) -> torch.Tensor:
    """The 0-dim distance of one pair ``[1, 3, H, W]`` under one transform, evaluated tile by tile."""
    flat, _, _, _ = network_input(metric, torch.stack([x, y]), metric.sample_for(transform, dropout=False))
    block_masks = None if masks is None else BlockDropoutMasks(masks.seed, masks.keep_probability)
    core = core_size(memory_budget(metric), metric.config.backbone, x.element_size())
    fused = metric._fused
    return network_stage(metric, lambda: tiled_distance(
        feature_network(metric), flat, metric.linear_weights, lambda tap: normalized_tap(tap, fused), block_masks,
        core)).to(x.dtype)


def _tiled_rows(metric: Metric, total: int, height: int, width: int, generator: torch.Generator | None,
                dropout: bool | None) -> list[tuple[int, TransformRecord | None, DropoutMasks | None]]:
    """``(row, transform, masks)`` for each of ``total`` rows of one stratified sample (each row its own
    mask seed), or ``(row, None, None)`` for a deterministic metric."""
    if not metric.is_stochastic:
        return [(row, None, None) for row in range(total)]
    sample = metric.sample(total, height, width, generator, dropout)
    generator = metric.generator if generator is None else generator
    rows = []
    for row in range(total):
        masks = sample.dropout if row == 0 or sample.dropout is None else dropout_masks(metric, generator, True)
        rows.append((row, None if sample.transform is None else sample.transform.rows(row, row + 1), masks))
    return rows


def _tiled_sample_distances(metric: Metric, x: torch.Tensor, y: torch.Tensor, n: int,
                            generator: torch.Generator | None, dropout: bool | None) -> torch.Tensor:
    """:func:`sample_distances` for pairs over the memory budget: one pair and sample at a time, tiled;
    ``[n, N]``."""
    batch, _, height, width = x.shape
    samples = n if metric.is_stochastic else 1
    distances = [tiled_pair_distance(metric, x[row % batch:][:1], y[row % batch:][:1], transform, masks)
                 for row, transform, masks in _tiled_rows(metric, samples * batch, height, width, generator,
                                                          dropout)]
    return torch.stack(distances).reshape(samples, batch).expand(n, batch)


def _tiled_compare_samples(metric: Metric, reference: torch.Tensor, candidates: torch.Tensor, n: int,
                           generator: torch.Generator | None) -> torch.Tensor:
    """:func:`compare_samples` for images over the memory budget: every candidate against the reference, one
    sample row at a time, tiled, all candidates under the row's transform and masks; ``[n, M, N]``."""
    count, batch, _, height, width = candidates.shape
    samples = n if metric.is_stochastic else 1
    rows = []
    for row, transform, masks in _tiled_rows(metric, samples * batch, height, width, generator, None):
        image = row % batch
        rows.append(torch.stack([
            tiled_pair_distance(metric, candidates[m, image:image + 1], reference[image:image + 1], transform, masks)
            for m in range(count)]))
    distances = torch.stack(rows, dim=1).reshape(count, samples, batch)  # [M, samples, N]
    return distances.transpose(0, 1).expand(n, count, batch)
