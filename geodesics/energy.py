"""The path energy ``E = sum_k d(x_k, x_{k+1})^2`` under one shared ensemble sample, and its gradient.

One step computes every frame's features once under the same sample (transform and dropout masks), takes
the ``K`` adjacent distances from them and backpropagates, in chunks of consecutive interior frames so that
memory is bounded by the chunk size, not by ``K``:

* keyframe features (endpoints and intermediate keyframes) are computed once, without a graph;
* a chunk of interior frames ``i..j`` is computed with a graph; its neighbours ``i-1`` and ``j+1`` enter as
  constants (frame ``i-1``'s features are carried, detached, from the previous chunk; frame ``j+1``'s are
  computed without a graph, one extra forward pass per chunk boundary);
* the chunk's loss is ``sum_{k=i-1..j} d(x_k, x_{k+1})^2``. Each boundary pair is thus differentiated once from
  each side, so the accumulated gradient equals the gradient of ``E`` exactly.

Cost per step with one chunk: ``K+1`` forward and ``K-1`` backward passes (versus ``2K`` forward and
``2(K-1)`` backward passes when each pair is evaluated on its own).
"""

from __future__ import annotations

import torch
from elpips import EnsembleSample, Features, Metric


def _tiled(frames: torch.Tensor, samples: int) -> torch.Tensor:
    """``[G, 3, H, W]`` -> ``[G, samples, 3, H, W]`` (a view; gradients flow back to ``frames``)."""
    return frames.unsqueeze(1).expand(-1, samples, -1, -1, -1)


def _select(features: Features, index: int) -> Features:
    """One group ``[1, N, ...]`` of a feature set, detached."""
    return [tap[index:index + 1].detach() for tap in features]


def _runs(free: list[bool], chunk_size: int) -> list[tuple[int, int]]:
    """Inclusive ``(i, j)`` ranges of consecutive free frames, split into chunks of at most ``chunk_size``."""
    chunks, k = [], 0
    while k < len(free):
        if not free[k]:
            k += 1
            continue
        start = k
        while k < len(free) and free[k] and k - start < chunk_size:
            k += 1
        chunks.append((start, k - 1))
    return chunks


def path_step(metric: Metric, path: torch.Tensor, free: torch.Tensor, variable: torch.Tensor | None,
              sample: EnsembleSample, samples: int = 1, chunk_size: int = 8,
              backward: bool = True, open_ends: bool = False) -> torch.Tensor:
    """Energy terms of one step and (if ``backward``) their gradient, accumulated into ``variable.grad``.

    Args:
        metric: the distance; its features are taken under ``sample``.
        path: ``[K+1, 3, H, W]`` in [0, 1], the current frames (interior rows are read from ``variable``).
        free: ``[K+1]`` bool, ``True`` at interior frames (endpoints must be ``False``).
        variable: ``[M, 3, H, W]`` leaf tensor holding the ``M = free.sum()`` interior frames in path order, or
            ``None`` to use ``path`` as it is (no gradient).
        sample: one ensemble sample for a batch of ``samples`` images (``metric.sample(samples, H, W)``).
        samples: copies of every frame in the batch (each copy sees its own transform of the sample).
        chunk_size: at most this many interior frames carry a graph at once.
        backward: accumulate ``dE/dvariable``; with ``False`` nothing builds a graph.
        open_ends: allow free first/last frames (a shard of a longer path, see
            :mod:`elpips.geodesics.sharded`): only the pairs inside ``path`` count.

    Returns:
        ``[K, samples]`` float32 distances ``d(x_k, x_{k+1})`` (detached); ``E = (d ** 2).mean(1).sum()``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    flags = [bool(v) for v in free.tolist()]
    if (flags[0] or flags[-1]) and not open_ends:
        raise ValueError("the first and last frames of a path are keyframes and cannot be free")
    total = len(flags)
    position = torch.cumsum(free.long(), 0) - 1  # row of frame k in ``variable``
    fixed_index = [k for k in range(total) if not flags[k]]
    fixed_features: dict[int, Features] = {}
    if fixed_index:  # a middle shard of a sharded path may hold no keyframe at all
        with torch.no_grad():
            fixed = metric.features(_tiled(path[fixed_index], samples), sample)
        fixed_features = {k: _select(fixed, n) for n, k in enumerate(fixed_index)}
    distances = torch.zeros(total - 1, samples, device=path.device)

    for k in range(total - 1):  # pairs of adjacent keyframes (segments without interior frames)
        if not flags[k] and not flags[k + 1]:
            distances[k] = metric.distance_between(fixed_features[k], fixed_features[k + 1])[0]

    def frames_of(i: int, j: int, grad: bool) -> torch.Tensor:
        """Frames ``i..j`` (all interior when ``variable`` is given), with or without a graph."""
        if variable is None:
            return path[i:j + 1]
        first = int(position[i])
        rows = variable[first:first + j - i + 1]
        return rows if grad else rows.detach()

    carried: Features | None = None
    for i, j in _runs(flags, chunk_size):
        grad = backward and variable is not None
        left = None if i == 0 else fixed_features[i - 1] if not flags[i - 1] else carried
        if j + 1 == total:
            right = None
        elif flags[j + 1]:
            with torch.no_grad():
                right = metric.features(_tiled(frames_of(j + 1, j + 1, False), samples), sample)
        else:
            right = fixed_features[j + 1]
        first = i if left is None else i - 1
        with torch.enable_grad() if grad else torch.no_grad():
            chunk = metric.features(_tiled(frames_of(i, j, grad), samples), sample)
            carried = _select(chunk, chunk[0].shape[0] - 1)
            pair = metric.adjacent_distances(chunk, left, right)
            if pair.shape[0] == 0:  # a lone free frame with no neighbour: no pair
                continue
            if grad:
                pair.square().mean(dim=1).sum().backward()
        distances[first:first + pair.shape[0]] = pair.detach()
    return distances
