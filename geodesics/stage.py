"""The path at one coarse-to-fine stage in one process: the frames, the free mask and the Adam variable.

:class:`~elpips.geodesics.sharded.ShardedStage` is the same for one rank of a process group.
"""

from __future__ import annotations

import torch
from elpips import EnsembleSample, Metric

from .energy import path_step
from .levels import Level
from .path import free_mask


class Stage:
    """The path at one stage. ``variable`` holds the interior frames this process optimises (all of them
    here), in path order; ``base`` holds the whole path (its optimised rows are stale until :meth:`path`)."""

    def __init__(self, level: Level, path: torch.Tensor) -> None:
        self.level = level
        self.free = free_mask(level.intervals)
        self.rows = self.owned_rows()
        self.base = path.detach().clone()
        self.variable = path[self.rows.to(path.device)].detach().clone().requires_grad_(True)

    def owned_rows(self) -> torch.Tensor:
        """``[K+1]`` bool: the frames of ``variable`` (every interior frame)."""
        return self.free

    def local_path(self) -> torch.Tensor:
        """``base`` with the current values of the optimised rows."""
        full = self.base.clone()
        full[self.rows.to(full.device)] = self.variable.detach()
        return full

    def path(self) -> torch.Tensor:
        """The whole current path ``[K+1, 3, H, W]``."""
        return self.local_path()

    def step(self, metric: Metric, sample: EnsembleSample, samples: int, chunk_size: int) -> torch.Tensor:
        """Accumulate ``dE/dvariable`` under ``sample``; returns ``[K, samples]`` detached distances."""
        return path_step(metric, self.base, self.free, self.variable, sample, samples, chunk_size)

    def whole_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """``rows`` shaped like :attr:`variable` (this process's interior frames) -> the same for every interior
        frame of the path (collective when sharded)."""
        return rows

    def own_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`whole_rows`: this process's share of a tensor over every interior frame."""
        return rows

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict:
        """The optimizer state of the whole path's variable (what a checkpoint holds)."""
        return optimizer.state_dict()

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        """Load a whole-path optimizer state (as :meth:`optimizer_state` writes it)."""
        optimizer.load_state_dict(state)
