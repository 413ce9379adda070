"""``solve``: a discrete geodesic through keyframes, minimising ``sum_k d(x_k, x_{k+1})^2`` by Adam.

Each step draws one ensemble sample shared by the whole path (see :mod:`elpips.geodesics.energy`), takes an
Adam step on the interior frames with the learning rate of ``schedule(step)``, and clips them to
``[1e-5, 1 - 1e-5]``. Coarse-to-fine in time (and optionally in space) visits the stages of
:func:`~elpips.geodesics.levels.plan_levels`; Adam restarts at each stage. With a checkpoint path the state is
saved atomically every ``checkpoint_every`` steps, and ``resume=True`` continues bit-exactly.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from elpips import Metric
from elpips.checkpoint import generator_state, load_checkpoint, restore_generator, save_checkpoint
from elpips.distributed import broadcast_object, is_distributed, is_main_process
from elpips.ensemble_stream import StratifiedStream, check_stream_mode
from elpips.schedules import reference_learning_rate
from elpips.validation import check_images

from .energy import evaluate_path, path_step
from .levels import Level, level_starts, plan_levels
from .path import (CLIP_HIGH, CLIP_LOW, downscale, free_mask, keyframe_indices, linear_path, resample_path,
                   segment_intervals, upscale_path)
from .sharded import PathShard, gather_frames, gather_rows, path_shard, sharded_path_step, single_shard

CHECKPOINT_FORMAT = "elpips-geodesic-1"


@dataclass
class StepInfo:
    """What a ``callback`` sees after every step.

    Attributes:
        step: steps completed (1-based), out of ``total_steps``.
        level: index of the current coarse-to-fine stage, out of ``num_levels``.
        frames: frames on the path at this stage.
        energy: this step's one-sample estimate of the path energy (at this stage's frame count).
        learning_rate: the learning rate used.
        seconds: wall time of this step.
    """

    step: int
    total_steps: int
    level: int
    num_levels: int
    frames: int
    energy: float
    learning_rate: float
    seconds: float


@dataclass
class GeodesicResult:
    """A solved path and how it was reached.

    Attributes:
        frames: ``[K+1, 3, H, W]`` float32 CPU tensor in [0, 1]; the keyframes are exact copies of the input.
        keyframe_indices: path indices of the keyframes (``[0, ..., K]``).
        intervals: intervals per keyframe segment.
        distances: ``[K]`` many-sample distance of each adjacent pair (a geodesic: nearly constant per segment).
        half_widths: ``[K]`` their 95% confidence half-widths.
        energy: ``sum_k distances_k^2``, the many-sample path energy.
        samples: ensemble samples behind ``distances``.
        energy_history: one-sample energy at every step (at the stage's frame count).
        levels: the coarse-to-fine stages.
        step_seconds: mean wall time of one step (over the steps run in this call).
        resumed_from: step the run resumed from (0 for a fresh run).
    """

    frames: torch.Tensor
    keyframe_indices: list[int]
    intervals: tuple[int, ...]
    distances: torch.Tensor
    half_widths: torch.Tensor
    energy: float
    samples: int
    energy_history: list[float] = field(default_factory=list)
    levels: list[Level] = field(default_factory=list)
    step_seconds: float = 0.0
    resumed_from: int = 0

    def segment_distances(self) -> list[torch.Tensor]:
        """``distances`` split by keyframe segment."""
        idx = self.keyframe_indices
        return [self.distances[idx[s]:idx[s + 1]] for s in range(len(idx) - 1)]

    def speed_spread(self) -> list[float]:
        """Per keyframe segment, ``(max - min) / mean`` of its distances (0 = constant speed)."""
        return [float((d.max() - d.min()) / d.mean()) if float(d.mean()) > 0 else 0.0
                for d in self.segment_distances()]


Schedule = Callable[[int], float]

DEFAULT_BASE_RATE = 0.005
"""Base rate of the default schedule. The barycenter's 0.03 starts from noise; a geodesic starts from the linear
blend, where 0.03 overshoots (cat/dog at 75x120, random backbone, 40 steps: energy +129% vs the blend, 0.01: -7%,
0.003: -9%)."""


def geodesic_learning_rate(step: int) -> float:
    """The reference's decaying schedule ``base / (1 + 0.02 t'^0.75)`` with ``base =`` :data:`DEFAULT_BASE_RATE`."""
    return reference_learning_rate(step, DEFAULT_BASE_RATE)


def _schedule(schedule: Schedule | float | None) -> Schedule:
    if schedule is None:
        return geodesic_learning_rate
    if isinstance(schedule, (int, float)) and not isinstance(schedule, bool):
        if not schedule > 0:
            raise ValueError(f"a constant learning rate must be > 0, got {schedule}")
        rate = float(schedule)
        return lambda step: rate
    if callable(schedule):
        return schedule
    raise ValueError(f"schedule must be None, a positive number or a callable step -> lr, got {schedule!r}")


def _stack_keyframes(keyframes: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    if isinstance(keyframes, torch.Tensor):
        return keyframes
    if len(keyframes) == 0:
        raise ValueError("keyframes is empty: give at least 2 images")
    shaped = []
    for index, image in enumerate(keyframes):
        if not isinstance(image, torch.Tensor):
            raise ValueError(f"keyframe {index} must be a torch.Tensor, got {type(image).__name__}")
        if image.dim() == 4 and image.shape[0] == 1:
            image = image[0]
        if image.dim() != 3:
            raise ValueError(f"keyframe {index} must be [3, H, W] or [1, 3, H, W], got {list(image.shape)}")
        shaped.append(image)
    if len({tuple(image.shape) for image in shaped}) > 1:
        raise ValueError(f"keyframes must have the same size, got {[list(image.shape) for image in shaped]}")
    return torch.stack(shaped)


def _check_init(init: str | torch.Tensor, keys: torch.Tensor, intervals: tuple[int, ...]) -> torch.Tensor | None:
    """``None`` for the linear blend, else the initial full-resolution path with exact keyframes."""
    if isinstance(init, str):
        if init != "linear":
            raise ValueError(f"init must be 'linear' or a [K+1, 3, H, W] tensor, got {init!r}")
        return None
    if not isinstance(init, torch.Tensor):
        raise ValueError(f"init must be 'linear' or a tensor, got {type(init).__name__}")
    expected = [sum(intervals) + 1, *keys.shape[1:]]
    if list(init.shape) != expected:
        raise ValueError(f"init must have shape {expected} (the whole path), got {list(init.shape)}")
    check_images(init, "init")
    path = init.detach().to(device=keys.device, dtype=torch.float32).clone()
    path[keyframe_indices(intervals)] = keys
    return path


def _fingerprint(metric: Metric, keys: torch.Tensor, levels: list[Level], samples_per_step: int,
                 init: torch.Tensor | None, ensemble_stream: str) -> dict:
    """What a checkpoint must agree on to be resumed."""
    keys64 = keys.detach().cpu().double()  # MPS has no float64
    return {
        "metric": metric.name,
        "backbone_weights": metric.weights_info.source,
        "keyframes_shape": list(keys.shape),
        "keyframes_sum": round(float(keys64.sum()), 6),
        "keyframes_square_sum": round(float(keys64.square().sum()), 6),
        "levels": [[list(level.intervals), level.scale, level.steps] for level in levels],
        "samples_per_step": samples_per_step,
        "ensemble_stream": ensemble_stream,
        "init": "linear" if init is None else round(float(init.detach().cpu().double().sum()), 6),
    }


class _Stage:
    """The path at one stage: the frames, the free mask and the Adam variable (this rank's interior frames;
    all of them without sharding). Rows of ``base`` outside this rank's block are stale between gathers."""

    def __init__(self, level: Level, path: torch.Tensor, sharded: bool) -> None:
        self.level = level
        self.free = free_mask(level.intervals)
        self.shard: PathShard = path_shard(level.frames) if sharded else single_shard(level.frames)
        self.rows = self.free & self.shard.owned()
        self.offset = int(self.free[:self.shard.start].sum())  # first owned row of the global variable
        self.base = path.detach().clone()
        self.variable = path[self.rows.to(path.device)].detach().clone().requires_grad_(True)

    def local_path(self) -> torch.Tensor:
        full = self.base.clone()
        full[self.rows.to(full.device)] = self.variable.detach()
        return full

    def path(self) -> torch.Tensor:
        """The whole current path (collective when sharded)."""
        return gather_frames(self.local_path(), self.shard)

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict:
        """The optimizer state of the whole path's variable (collective when sharded; Adam is elementwise)."""
        state = optimizer.state_dict()
        if self.shard.world_size == 1:
            return state
        state = copy.deepcopy(state)  # state_dict() shares the live per-parameter tensors: never edit those
        total = int(self.free.sum())
        for slot in state["state"].values():
            for key, value in list(slot.items()):
                if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == self.variable.shape[0]:
                    slot[key] = gather_rows(value, self.offset, total)
        return state

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        """Load a whole-path optimizer state (as :meth:`optimizer_state` writes it), keeping this rank's rows."""
        if self.shard.world_size > 1:
            total, count = int(self.free.sum()), self.variable.shape[0]
            for slot in state["state"].values():
                for key, value in list(slot.items()):
                    if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == total:
                        slot[key] = value[self.offset:self.offset + count].clone()
        optimizer.load_state_dict(state)


def _initial_path(level: Level, keys: torch.Tensor, init: torch.Tensor | None,
                  intervals: tuple[int, ...]) -> torch.Tensor:
    if init is None:
        return linear_path(downscale(keys, level.scale), level.intervals)
    path = resample_path(init, intervals, level.intervals)
    coarse = downscale(path, level.scale)
    coarse[keyframe_indices(level.intervals)] = downscale(keys, level.scale)
    return coarse


def _transition(path: torch.Tensor, old: Level, new: Level, keys: torch.Tensor) -> torch.Tensor:
    """Carry a solved path to the next stage: resample in time, then lift to the new resolution."""
    if old.intervals != new.intervals:
        path = resample_path(path, old.intervals, new.intervals)
    if old.scale != new.scale:
        if old.scale % new.scale:
            raise ValueError(f"cannot go from scale {old.scale} to {new.scale}")
        factor = old.scale // new.scale
        path = upscale_path(path, downscale(keys, new.scale), new.intervals, factor)
    return path


def _validate_counts(steps: int, chunk_size: int, samples_per_step: int, eval_samples: int,
                     checkpoint_every: int) -> None:
    for name, value, low in (("steps", steps, 0), ("chunk_size", chunk_size, 1),
                             ("samples_per_step", samples_per_step, 1), ("eval_samples", eval_samples, 1),
                             ("checkpoint_every", checkpoint_every, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def solve(
    keyframes: torch.Tensor | Sequence[torch.Tensor],
    frames: int | Sequence[int] = 10,
    metric: Metric | None = None,
    steps: int = 500,
    init: str | torch.Tensor = "linear",
    schedule: Schedule | float | None = None,
    coarse_to_fine: bool = True,
    spatial: bool = False,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
    callback: Callable[[StepInfo], None] | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 50,
    resume: bool = False,
    chunk_size: int = 8,
    samples_per_step: int = 1,
    eval_samples: int = 32,
    eval_generator: torch.Generator | None = None,
    coarse_fraction: float = 0.5,
    shard: bool = False,
    ensemble_stream: str = "independent",
) -> GeodesicResult:
    """A discrete geodesic through ``keyframes``: the path whose interior frames minimise
    ``E = sum_k d(x_k, x_{k+1})^2`` (a perceptual spline through more than two keyframes).

    Args:
        keyframes: ``[S+1, 3, H, W]`` float in [0, 1] (``S+1 >= 2``), or a sequence of ``[1, 3, H, W]`` /
            ``[3, H, W]`` images. They are never changed.
        frames: total frames on the path, keyframes included (10: A, 8 interior, B), or intervals per keyframe
            segment (see :func:`~elpips.geodesics.path.segment_intervals`).
        metric: the distance (default: ``Metric("elpips-vgg")``); E-LPIPS, LPIPS or ``l2``.
        steps: Adam steps in total, all stages together.
        init: ``"linear"`` (the piecewise-linear blend) or a ``[K+1, 3, H, W]`` path in [0, 1] (keyframe rows
            are replaced by the keyframes).
        schedule: learning rate per global step: a callable, a constant, or ``None`` for
            :func:`geodesic_learning_rate` (``0.005 / (1 + 0.02 t'^0.75)``).
        coarse_to_fine: start with few interior frames and subdivide (see :func:`plan_levels`).
        spatial: solve the coarse stages at half resolution (needs ``min(H, W) / 2 >= metric.min_size``).
        generator: CPU generator for the ensemble sampling (default: the metric's own).
        device: move the metric there (default: where the metric is).
        callback: called with a :class:`StepInfo` after every step (and after any checkpoint write).
        checkpoint: file for the solver state (written atomically every ``checkpoint_every`` steps and at the end).
        resume: continue from ``checkpoint`` (it must exist and match these settings); bit-exact with the
            same generator seed.
        chunk_size: interior frames that carry a graph at once (bounds memory).
        samples_per_step: ensemble samples per step (each frame is tiled this many times).
        eval_samples: samples for the final per-pair distances (1 for deterministic metrics).
        eval_generator: generator for those samples (default: ``generator``, after the last step); pass a
            freshly seeded one to evaluate other paths under the very same samples.
        coarse_fraction: share of ``steps`` spent in the coarse stages.
        shard: inside a ``torch.distributed`` process group, split the frames over the ranks (see
            :mod:`elpips.geodesics.sharded`); every rank must call ``solve`` with the same arguments. The
            generators start from rank 0's states; only rank 0 writes the checkpoint (keep it on a filesystem
            every rank can read for ``resume``); the result is the same on every rank. Checkpoints do not depend
            on the number of ranks.
        ensemble_stream: ``"independent"`` (a fresh ensemble sample every step) or ``"stratified"`` (one sample
            per step from a :class:`~elpips.ensemble_stream.StratifiedStream`: flips, permutations, colour
            factors and scale levels stratified over consecutive steps; needs ``samples_per_step=1``).

    Returns:
        A :class:`GeodesicResult`; ``frames`` is ``[K+1, 3, H, W]`` on the CPU.
    """
    metric = Metric() if metric is None else metric
    if device is not None:
        metric.to(device)
    _validate_counts(steps, chunk_size, samples_per_step, eval_samples, checkpoint_every)
    check_stream_mode(ensemble_stream, samples_per_step)
    learning_rate = _schedule(schedule)
    keys = _stack_keyframes(keyframes)
    check_images(keys, "keyframes", metric.min_size)
    if keys.shape[0] < 2:
        raise ValueError(f"a geodesic needs at least 2 keyframes, got {keys.shape[0]}")
    keys = keys.detach().to(device=metric.device, dtype=torch.float32)
    intervals = segment_intervals(frames, keys.shape[0])
    if spatial and min(keys.shape[-2:]) // 2 < metric.min_size:
        raise ValueError(f"spatial coarse-to-fine needs images of at least {2 * metric.min_size} px for "
                         f"{metric.name}, got {keys.shape[-2]}x{keys.shape[-1]}")
    initial = _check_init(init, keys, intervals)
    levels = plan_levels(intervals, steps, coarse_to_fine, spatial, coarse_fraction)
    starts = level_starts(levels)
    total = sum(level.steps for level in levels)
    generator = metric.generator if generator is None else generator
    fingerprint = _fingerprint(metric, keys, levels, samples_per_step, initial, ensemble_stream)
    sharded = shard and is_distributed()
    if sharded:  # every rank must draw the very same ensemble samples
        restore_generator(generator, broadcast_object(generator_state(generator)))
        if eval_generator is not None:
            restore_generator(eval_generator, broadcast_object(generator_state(eval_generator)))

    current = 0
    stage = _Stage(levels[0], _initial_path(levels[0], keys, initial, intervals), sharded)
    optimizer = torch.optim.Adam([stage.variable], lr=learning_rate(0))
    history: list[float] = []
    first_step = 0
    stream_seed = None
    if ensemble_stream == "stratified" and not resume:
        stream_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    if resume:
        if checkpoint is None:
            raise ValueError("resume=True needs a checkpoint path")
        state = load_checkpoint(checkpoint)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"'{checkpoint}' is not a geodesic checkpoint")
        differing = sorted(k for k in fingerprint if state["fingerprint"].get(k) != fingerprint[k])
        if differing:
            raise ValueError(f"checkpoint '{checkpoint}' was written with other settings ({', '.join(differing)} "
                             "differ): resuming needs the same keyframes, metric, frames, steps and "
                             "coarse-to-fine options")
        current, first_step, history = int(state["level"]), int(state["step"]), list(state["energy_history"])
        path = state["path"].to(metric.device)
        stage = _Stage(levels[current], path, sharded)
        optimizer = torch.optim.Adam([stage.variable], lr=learning_rate(first_step))
        stage.load_optimizer_state(optimizer, state["optimizer"])
        restore_generator(generator, state["generator"])
        stream_seed = state.get("stream_seed")
    stream = None if stream_seed is None else StratifiedStream(stream_seed)

    def save(done: int) -> None:
        path, optimizer_state = stage.path().cpu(), stage.optimizer_state(optimizer)  # collective
        if is_main_process():
            save_checkpoint(checkpoint, {
                "format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "step": done, "level": current,
                "path": path, "optimizer": optimizer_state,
                "generator": generator_state(generator), "energy_history": list(history),
                "stream_seed": stream_seed,
            })

    height, width = stage.base.shape[-2:]
    run_seconds = 0.0
    for step in range(first_step, total):
        started = time.perf_counter()
        level = max(index for index, start in enumerate(starts) if start <= step)
        if level != current:
            path = _transition(stage.path(), levels[current], levels[level], keys)
            stage, current = _Stage(levels[level], path, sharded), level
            optimizer = torch.optim.Adam([stage.variable], lr=learning_rate(step))
            height, width = stage.base.shape[-2:]
        rate = float(learning_rate(step))
        for group in optimizer.param_groups:
            group["lr"] = rate
        optimizer.zero_grad(set_to_none=True)
        if stream is None:
            sample = metric.sample(samples_per_step, height, width, generator)
        else:
            sample = stream.sample(metric, step, height, width)
        distances = sharded_path_step(metric, stage.base, stage.free, stage.variable, stage.shard, sample,
                                      samples_per_step, chunk_size)
        optimizer.step()
        with torch.no_grad():
            stage.variable.clamp_(CLIP_LOW, CLIP_HIGH)
        energy = float(distances.square().mean(dim=1).sum())
        history.append(energy)
        if checkpoint is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == total):
            save(step + 1)
        seconds = time.perf_counter() - started
        run_seconds += seconds
        if callback is not None:
            callback(StepInfo(step + 1, total, current, len(levels), levels[current].frames, energy, rate, seconds))

    path = stage.path()
    if current != len(levels) - 1:  # the final stage got no steps: carry the path there anyway
        path = _transition(path, levels[current], levels[-1], keys)
    path[keyframe_indices(intervals)] = keys
    evaluation = evaluate_path(metric, path, eval_samples, generator if eval_generator is None else eval_generator,
                               chunk_size=chunk_size, shard=path_shard(path.shape[0]) if sharded else None)
    ran = total - first_step
    return GeodesicResult(
        frames=path.detach().cpu(), keyframe_indices=keyframe_indices(intervals), intervals=intervals,
        distances=evaluation.distances, half_widths=evaluation.half_widths, energy=evaluation.energy,
        samples=evaluation.samples, energy_history=history, levels=levels,
        step_seconds=run_seconds / ran if ran else 0.0, resumed_from=first_step,
    )
