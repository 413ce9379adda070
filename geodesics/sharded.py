"""One geodesic sharded over ``torch.distributed`` ranks (``torchrun ... -m elpips geodesic``).

Rank ``r`` owns a contiguous block of frames ``start..stop-1`` of the ``K+1``-frame path (see
:func:`path_shard`) and the pairs ``d(x_k, x_{k+1})`` that begin in its block. Every rank draws the same
ensemble sample each step (the generators start from rank 0's state and are consumed identically), so a step
computes exactly the terms of the single-process energy, split by rank:

* the boundary pair ``d(x_{stop-1}, x_stop)`` of rank ``r`` needs rank ``r+1``'s first frame: it is received
  (point-to-point) before the step, treated as one more frame of the local path, and its gradient is sent back
  to rank ``r+1``, which adds it to its own;
* the distances are combined with one all-reduce (each rank fills its own rows of a zero ``[K, samples]``
  tensor, so the sum is exact).

Gradients and energy therefore equal the single-process solver's up to float rounding (different batch sizes
in the convolutions). Ranks without frames (more ranks than frames, e.g. at a coarse stage) take part in the
collectives only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from elpips import EnsembleSample, Metric
from elpips.distributed import (
    all_reduce_sum,
    contiguous_block,
    exchange_backwards,
    exchange_with_neighbours,
    rank_and_world,
)

from .energy import path_step
from .levels import Level
from .stage import Stage


@dataclass(frozen=True)
class PathShard:
    """This rank's block of a path.

    Attributes:
        rank, world_size: the process's place in the group.
        start, stop: owned frames ``start..stop-1`` (empty when ``start == stop``).
        frames: frames on the whole path (``K + 1``).
    """

    rank: int
    world_size: int
    start: int
    stop: int
    frames: int

    @property
    def active(self) -> bool:
        return self.stop > self.start

    @property
    def has_left(self) -> bool:
        """Rank ``r-1`` owns frame ``start - 1`` (and the pair that ends at ``start``)."""
        return self.active and self.start > 0

    @property
    def has_right(self) -> bool:
        """Rank ``r+1`` owns frame ``stop``, the right end of this rank's boundary pair."""
        return self.active and self.stop < self.frames

    def owned(self) -> torch.Tensor:
        """``[frames]`` bool, ``True`` on the owned frames."""
        mask = torch.zeros(self.frames, dtype=torch.bool)
        mask[self.start:self.stop] = True
        return mask


def path_shard(frames: int, rank: int | None = None, world_size: int | None = None) -> PathShard:
    """The block of ``frames`` path frames that ``rank`` owns (default: this process's rank and world)."""
    if rank is None or world_size is None:
        rank, world_size = rank_and_world()
    start, stop = contiguous_block(frames, rank, world_size)
    return PathShard(rank, world_size, start, stop, frames)


def sharded_path_step(metric: Metric, path: torch.Tensor, free: torch.Tensor, variable: torch.Tensor | None,
                      shard: PathShard, sample: EnsembleSample, samples: int = 1, chunk_size: int = 8,
                      backward: bool = True) -> torch.Tensor:
    """:func:`~elpips.geodesics.energy.path_step` for this rank's block; collective (every rank must call it).

    Args:
        path: ``[K+1, 3, H, W]``; only the owned rows are read (interior ones from ``variable``).
        free: ``[K+1]`` bool, ``True`` at interior frames.
        variable: ``[M_r, 3, H, W]`` leaf holding the owned interior frames in path order, or ``None`` to use
            ``path`` as it is (no gradient). ``variable.grad`` receives ``dE/dvariable`` including the boundary
            terms computed by the neighbouring rank.
        shard: from :func:`path_shard` for ``K + 1`` frames.
        sample: the ensemble sample, identical on every rank.

    Returns:
        ``[K, samples]`` detached distances of the whole path, identical on every rank.
    """
    if shard.world_size == 1:
        return path_step(metric, path, free, variable, sample, samples, chunk_size, backward)
    distances = torch.zeros(shard.frames - 1, samples, device=path.device)
    backward = backward and variable is not None
    start, stop = shard.start, shard.stop
    local_free = free[start:stop]
    rows = path[start:stop].detach().clone()
    if variable is not None:
        rows[local_free.to(rows.device)] = variable.detach()

    incoming = torch.empty_like(path[0]) if shard.has_right else None
    exchange_with_neighbours(rows[0] if shard.has_left else None, incoming)
    right_free = shard.has_right and bool(free[stop])
    if shard.active:
        local_path = rows if incoming is None else torch.cat([rows, incoming[None]])
        flags = local_free if incoming is None else torch.cat([local_free, free[stop:stop + 1]])
        work = None
        if variable is not None:
            parts = [variable.detach()] + ([incoming[None]] if right_free and incoming is not None else [])
            work = torch.cat(parts).requires_grad_(backward)
        local = path_step(metric, local_path, flags, work if backward else None, sample, samples, chunk_size,
                          backward, open_ends=True)
        distances[start:start + local.shape[0]] = local
    if backward and variable is not None:  # backward is off without a variable
        grad = work.grad if shard.active and work is not None and work.grad is not None else None
        if grad is None:
            grad = torch.zeros(variable.shape[0] + int(right_free), *variable.shape[1:], device=variable.device)
        own = grad[:variable.shape[0]]
        from_left = torch.empty_like(path[0]) if shard.has_left and bool(free[start]) else None
        exchange_backwards(grad[-1] if right_free else None, from_left)
        if from_left is not None:
            own = own.clone()
            own[0] += from_left
        variable.grad = own if variable.grad is None else variable.grad + own
    return all_reduce_sum(distances)


def gather_frames(local_path: torch.Tensor, shard: PathShard) -> torch.Tensor:
    """The whole ``[K+1, 3, H, W]`` path on every rank from each rank's owned rows of ``local_path``."""
    if shard.world_size == 1:
        return local_path
    return gather_rows(local_path[shard.start:shard.stop], shard.start, shard.frames)


def gather_rows(local_rows: torch.Tensor, offset: int, total: int) -> torch.Tensor:
    """Concatenate every rank's ``local_rows`` (rows ``offset..offset+len-1`` of a ``[total, ...]`` tensor)."""
    full = torch.zeros(total, *local_rows.shape[1:], dtype=local_rows.dtype, device=local_rows.device)
    full[offset:offset + local_rows.shape[0]] = local_rows
    return all_reduce_sum(full)


class ShardedStage(Stage):
    """:class:`~elpips.geodesics.stage.Stage` for one rank: ``variable`` holds this rank's interior frames only.
    Rows of ``base`` outside this rank's block are stale between gathers; :meth:`path` and the optimizer state
    are collective (every rank must call them)."""

    def __init__(self, level: Level, path: torch.Tensor) -> None:
        self.shard = path_shard(level.frames)
        super().__init__(level, path)
        self.offset = int(self.free[:self.shard.start].sum())  # first owned row of the global variable

    def owned_rows(self) -> torch.Tensor:
        return self.free & self.shard.owned()

    def path(self) -> torch.Tensor:
        return gather_frames(self.local_path(), self.shard)

    def step(self, metric: Metric, sample: EnsembleSample, samples: int, chunk_size: int) -> torch.Tensor:
        return sharded_path_step(metric, self.base, self.free, self.variable, self.shard, sample, samples,
                                 chunk_size)

    def whole_rows(self, rows: torch.Tensor) -> torch.Tensor:
        if self.shard.world_size == 1:
            return rows
        return gather_rows(rows, self.offset, int(self.free.sum()))

    def own_rows(self, rows: torch.Tensor) -> torch.Tensor:
        if self.shard.world_size == 1:
            return rows
        return rows[self.offset:self.offset + self.variable.shape[0]].clone()

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict:
        state = optimizer.state_dict()
        if self.shard.world_size == 1:
            return state
        state = copy.deepcopy(state)  # state_dict() shares the live per-parameter tensors: never edit those
        for slot in state["state"].values():
            for key, value in list(slot.items()):
                if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == self.variable.shape[0]:
                    slot[key] = self.whole_rows(value)
        return state

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        if self.shard.world_size > 1:
            total = int(self.free.sum())
            for slot in state["state"].values():
                for key, value in list(slot.items()):
                    if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == total:
                        slot[key] = self.own_rows(value)
        optimizer.load_state_dict(state)
