"""``solve``: a discrete geodesic through keyframes, minimising ``sum_k d(x_k, x_{k+1})^2`` by Adam.

Each step draws one ensemble sample shared by the whole path (see :mod:`elpips.geodesics.energy`), takes an
Adam step on the interior frames with the learning rate of ``lr(step)``, and clips them to ``[1e-5, 1 - 1e-5]``.
Coarse-to-fine in time (and optionally in space) visits the stages of
:func:`~elpips.geodesics.levels.plan_levels`; Adam restarts at each stage. With a checkpoint path the state is
saved atomically every ``checkpoint_every`` steps, and ``resume=True`` continues bit-exactly
(``docs/algorithm.md#geodesics``).

``solve`` runs four named phases: :func:`_prepare` (checks, stages, settings), :func:`_start` or :func:`_resume`
(the run's state), :func:`_iterate` (the steps and checkpoints) and :func:`_finish` (the evaluation and result).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from elpips import Metric
from elpips.distributed import broadcast_object, is_distributed, is_main_process
from elpips.record import differences
from elpips.solver import (
    StepInfo,
    check_format,
    checkpoint_format,
    clip_,
    generator_state,
    learning_rate_schedule,
    load_checkpoint,
    make_generator,
    phase,
    reporting,
    restore_generator,
    save_checkpoint,
)
from elpips.solver.averaging import IterateAverage, averaging_start, resolve_average_last
from elpips.solver.ensemble_stream import StratifiedStream, check_stream_mode
from elpips.solver.metrics import resolve_metric
from elpips.validation import check_images, check_positive_int

from .evaluate import evaluate_path
from .levels import Level, carry_path, initial_path, level_starts, plan_levels
from .options import check_init, geodesic_learning_rate, solve_record, stack_keyframes
from .path import keyframe_indices, segment_intervals
from .sharded import ShardedStage, path_shard
from .stage import Stage

CHECKPOINT_FORMAT = checkpoint_format("geodesic")

Schedule = Callable[[int], float]


@dataclass
class GeodesicStepInfo(StepInfo):
    """:class:`~elpips.solver.StepInfo` of a geodesic step; ``loss`` is the one-sample path energy at this
    stage's frame count.

    Attributes:
        level: index of the current coarse-to-fine stage, out of ``num_levels``.
        frames: frames on the path at this stage.
    """

    level: int
    num_levels: int
    frames: int

    @property
    def energy(self) -> float:
        """This step's one-sample estimate of the path energy (``loss``)."""
        return self.loss


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
        seed: the seed of the run's sampling generator (``generator.initial_seed()``; on resume, the
            checkpointed run's).
        start_energy: the many-sample energy of the starting path (the linear blend, or ``init``) under the same
            draws as ``energy``; where the solved path's is higher, the starting path is returned instead and
            ``note`` says so in one line (``None`` otherwise): a solve is never silently worse than its start.
        averaged_iterates: how many iterates (of the last stage) the returned path's interior frames average
            (0: the last iterate; also when the starting path is returned).
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
    seed: int | None = None
    start_energy: float | None = None
    note: str | None = None
    averaged_iterates: int = 0

    def segment_distances(self) -> list[torch.Tensor]:
        """``distances`` split by keyframe segment."""
        idx = self.keyframe_indices
        return [self.distances[idx[s]:idx[s + 1]] for s in range(len(idx) - 1)]

    def speed_spread(self) -> list[float]:
        """Per keyframe segment, ``(max - min) / mean`` of its distances (0 = constant speed)."""
        return [float((d.max() - d.min()) / d.mean()) if float(d.mean()) > 0 else 0.0
                for d in self.segment_distances()]


@dataclass
class _Plan:
    """Everything fixed for one solve: the metric, the keyframes on its device, the stages and the options."""

    metric: Metric
    keys: torch.Tensor
    intervals: tuple[int, ...]
    initial: torch.Tensor | None
    levels: list[Level]
    schedule: Schedule
    generator: torch.Generator
    record: dict
    sharded: bool
    chunk_size: int
    samples_per_step: int
    checkpoint_every: int
    ensemble_stream: str
    average_start: int

    @property
    def total_steps(self) -> int:
        return sum(level.steps for level in self.levels)

    def stage(self, index: int, path: torch.Tensor) -> Stage:
        """The stage ``index`` holding ``path`` (one rank's share of it when sharded)."""
        return (ShardedStage if self.sharded else Stage)(self.levels[index], path)


@dataclass
class _Run:
    """The state a checkpoint holds: the stage, its Adam, the iterates' average, the energy history and where the
    run is."""

    stage: Stage
    optimizer: torch.optim.Optimizer
    average: IterateAverage
    current: int
    first_step: int
    history: list[float]
    run_seconds: float = 0.0
    stream: StratifiedStream | None = None


def _prepare(keyframes: Any, frames: Any, metric: Metric, steps: int, init: Any, lr: Any, coarse_to_fine: bool,
             spatial: bool, generator: Any, eval_generator: torch.Generator | None, checkpoint_every: int,
             chunk_size: int, samples_per_step: int, eval_samples: int, coarse_fraction: float,
             shard: bool, ensemble_stream: str, average_last: float | None) -> _Plan:
    """Check every option, plan the stages and agree on the random streams across ranks."""
    for name, value, low in (("steps", steps, 0), ("chunk_size", chunk_size, 1),
                             ("samples_per_step", samples_per_step, 1), ("eval_samples", eval_samples, 1),
                             ("checkpoint_every", checkpoint_every, 1)):
        check_positive_int(value, name, minimum=low)
    check_stream_mode(ensemble_stream, samples_per_step)
    average_last = resolve_average_last(average_last, metric)
    schedule, lr_description = learning_rate_schedule(lr, geodesic_learning_rate)
    keys = stack_keyframes(keyframes)
    check_images(keys, "keyframes", metric.min_size)
    if keys.shape[0] < 2:
        raise ValueError(f"a geodesic needs at least 2 keyframes, got {keys.shape[0]}")
    keys = keys.detach().to(device=metric.device, dtype=torch.float32)
    intervals = segment_intervals(frames, keys.shape[0])
    if spatial and min(keys.shape[-2:]) // 2 < metric.min_size:
        raise ValueError(f"spatial coarse-to-fine needs images of at least {2 * metric.min_size} px for "
                         f"{metric.name}, got {keys.shape[-2]}x{keys.shape[-1]}")
    initial = check_init(init, keys, intervals)
    levels = plan_levels(intervals, steps, coarse_to_fine, spatial, coarse_fraction)
    generator = make_generator(generator)  # never the metric's own: a solve does not draw from it
    sharded = shard and is_distributed()
    if sharded:  # every rank must draw the very same ensemble samples
        restore_generator(generator, broadcast_object(generator_state(generator)))
        if eval_generator is not None:
            restore_generator(eval_generator, broadcast_object(generator_state(eval_generator)))
    total = sum(level.steps for level in levels)
    return _Plan(metric, keys, intervals, initial, levels, schedule, generator,
                 solve_record(metric, keys, levels, samples_per_step, initial, lr_description, ensemble_stream,
                              average_last),
                 sharded, chunk_size, samples_per_step, checkpoint_every, ensemble_stream,
                 averaging_start(total, average_last, earliest=level_starts(levels)[-1]))


def _periodic(metric: Metric) -> bool:
    """Whether the metric sees its images on a torus (the ensemble's tileable mode): the stages then carry the
    path across resolutions with wrap-around."""
    return bool(getattr(getattr(metric, "ensemble", None), "tileable", False))


def _start(plan: _Plan) -> _Run:
    """A fresh run at the first stage, from the linear blend or the given path."""
    stage = plan.stage(0, initial_path(plan.levels[0], plan.keys, plan.initial, plan.intervals))
    stream = None
    if plan.ensemble_stream == "stratified":
        stream = StratifiedStream(int(torch.randint(0, 2**62, (1,), generator=plan.generator)))
    return _Run(stage, torch.optim.Adam([stage.variable], lr=plan.schedule(0)), IterateAverage(plan.average_start),
                0, 0, [], stream=stream)


def _resume(plan: _Plan, checkpoint: str | os.PathLike) -> _Run:
    """The run saved in ``checkpoint`` (written with the same settings), continuing bit-exactly."""
    state = load_checkpoint(checkpoint)
    check_format(state, "geodesic", checkpoint)
    differing = differences(state["settings"], plan.record)
    if differing:
        raise ValueError(f"cannot resume from '{checkpoint}': it was written with other settings: "
                         f"{'; '.join(differing)}")
    current, first_step = int(state["level"]), int(state["step"])
    stage = plan.stage(current, state["path"].to(plan.metric.device))
    optimizer = torch.optim.Adam([stage.variable], lr=plan.schedule(first_step))
    stage.load_optimizer_state(optimizer, state["optimizer"])
    restore_generator(plan.generator, state["generator"])
    stream_seed = state.get("stream_seed")
    stream = None if stream_seed is None else StratifiedStream(stream_seed)
    saved_average = state["average"]
    if saved_average["mean"] is not None:
        saved_average = {**saved_average, "mean": stage.own_rows(saved_average["mean"])}
    average = IterateAverage.restore(saved_average, plan.average_start, first_step, stage.variable.device)
    return _Run(stage, optimizer, average, current, first_step, list(state["energy_history"]), stream=stream)


def _save(plan: _Plan, run: _Run, checkpoint: str | os.PathLike, done: int) -> None:
    """Write the checkpoint of step ``done`` (collective when sharded; rank 0 writes)."""
    path, optimizer_state = run.stage.path().cpu(), run.stage.optimizer_state(run.optimizer)
    average = run.average.state()
    if run.average.mean is not None:
        average["mean"] = run.stage.whole_rows(run.average.mean).cpu()
    if is_main_process():
        save_checkpoint(checkpoint, {
            "format": CHECKPOINT_FORMAT, "settings": plan.record, "step": done, "level": run.current,
            "path": path, "optimizer": optimizer_state,
            "generator": generator_state(plan.generator), "energy_history": list(run.history),
            "stream_seed": None if run.stream is None else run.stream.seed, "average": average,
        })


def _enter_level(plan: _Plan, run: _Run, step: int) -> None:
    """Move to the stage that ``step`` belongs to, if the run is not there yet (Adam restarts)."""
    starts = level_starts(plan.levels)
    level = max(index for index, start in enumerate(starts) if start <= step)
    if level != run.current:
        path = carry_path(run.stage.path(), plan.levels[run.current], plan.levels[level], plan.keys,
                          _periodic(plan.metric))
        run.stage, run.current = plan.stage(level, path), level
        run.optimizer = torch.optim.Adam([run.stage.variable], lr=plan.schedule(step))


def _iterate(plan: _Plan, run: _Run, checkpoint: str | os.PathLike | None,
             callback: Callable[[GeodesicStepInfo], None] | None) -> None:
    """Run the steps from ``run.first_step`` to the end: one shared sample, one Adam step, clip, checkpoint."""
    total = plan.total_steps
    for step in range(run.first_step, total):
        started = time.perf_counter()
        _enter_level(plan, run, step)
        height, width = run.stage.base.shape[-2:]
        rate = float(plan.schedule(step))
        for group in run.optimizer.param_groups:
            group["lr"] = rate
        run.optimizer.zero_grad(set_to_none=True)
        if run.stream is None:
            sample = plan.metric.sample(plan.samples_per_step, height, width, plan.generator)
        else:
            sample = run.stream.sample(plan.metric, step, height, width)
        distances = run.stage.step(plan.metric, sample, plan.samples_per_step, plan.chunk_size)
        run.optimizer.step()
        clip_(run.stage.variable)
        run.average.update(run.stage.variable, step + 1)
        energy = float(distances.square().mean(dim=1).sum())
        run.history.append(energy)
        if checkpoint is not None and ((step + 1) % plan.checkpoint_every == 0 or step + 1 == total):
            _save(plan, run, checkpoint, step + 1)
        seconds = time.perf_counter() - started
        run.run_seconds += seconds
        if callback is not None:
            callback(GeodesicStepInfo(step + 1, total, rate, energy, seconds, run.current, len(plan.levels),
                                      plan.levels[run.current].frames))


def _finish(plan: _Plan, run: _Run, eval_samples: int, eval_generator: torch.Generator | None,
            progress: bool = False) -> GeodesicResult:
    """The final path (the iterates' average where there is one) at full resolution with exact keyframes, its
    many-sample distances and the result."""
    averaged = run.average.value()
    if averaged is not None:
        with torch.no_grad():
            run.stage.variable.copy_(averaged)
    path = run.stage.path()
    if run.current != len(plan.levels) - 1:  # the final stage got no steps: carry the path there anyway
        path = carry_path(path, plan.levels[run.current], plan.levels[-1], plan.keys, _periodic(plan.metric))
    indices = keyframe_indices(plan.intervals)
    path[indices] = plan.keys
    generator = plan.generator if eval_generator is None else eval_generator
    shard = path_shard(path.shape[0]) if plan.sharded else None
    draws = generator_state(generator)
    with phase(f"{plan.metric.name}: distances along the path ({eval_samples} samples)", enabled=progress):
        evaluation = evaluate_path(plan.metric, path, eval_samples, generator, chunk_size=plan.chunk_size,
                                   shard=shard)
    after = generator_state(generator)
    restore_generator(generator, draws)  # the starting path under the very same draws: a paired comparison
    start = initial_path(plan.levels[-1], plan.keys, plan.initial, plan.intervals)
    start[indices] = plan.keys
    with phase(f"{plan.metric.name}: distances along the starting path", enabled=progress):
        start_evaluation = evaluate_path(plan.metric, start, eval_samples, generator, chunk_size=plan.chunk_size,
                                         shard=shard)
    restore_generator(generator, after)
    note = None
    if start_evaluation.energy < evaluation.energy:
        note = (f"geodesic: the solved path's energy {evaluation.energy:.4g} is above its starting path's "
                f"{start_evaluation.energy:.4g} (same samples): returning the starting path")
        path, evaluation = start, start_evaluation
    averaged_iterates = run.average.count if note is None else 0
    ran = plan.total_steps - run.first_step
    return GeodesicResult(
        frames=path.detach().cpu(), keyframe_indices=indices, intervals=plan.intervals,
        distances=evaluation.distances, half_widths=evaluation.half_widths, energy=evaluation.energy,
        samples=evaluation.samples, energy_history=run.history, levels=plan.levels,
        step_seconds=run.run_seconds / ran if ran else 0.0, resumed_from=run.first_step,
        seed=plan.generator.initial_seed(), start_energy=start_evaluation.energy, note=note,
        averaged_iterates=averaged_iterates,
    )


def _describe(info: GeodesicStepInfo) -> dict[str, Any]:
    return {"energy": f"{info.loss:.4g}", "stage": f"{info.level + 1}/{info.num_levels}",
            "frames": info.frames}


def solve(
    keyframes: torch.Tensor | Sequence[torch.Tensor],
    metric: Metric | str = "elpips-vgg",
    *,
    frames: int | Sequence[int] = 10,
    steps: int = 500,
    lr: Schedule | float | None = None,
    init: str | torch.Tensor = "linear",
    generator: torch.Generator | int | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 50,
    resume: bool = False,
    callback: Callable[[GeodesicStepInfo], None] | None = None,
    progress: bool = False,
    device: str | torch.device | None = None,
    samples_per_step: int = 1,
    chunk_size: int = 8,
    eval_samples: int = 32,
    ensemble_stream: str = "independent",
    coarse_to_fine: bool = True,
    spatial: bool = False,
    coarse_fraction: float = 0.5,
    eval_generator: torch.Generator | None = None,
    shard: bool = False,
    average_last: float | None = None,
) -> GeodesicResult:
    """A discrete geodesic through ``keyframes``: the path whose interior frames minimise
    ``E = sum_k d(x_k, x_{k+1})^2`` (a perceptual spline through more than two keyframes).

    The keyframes and the metric are positional, every option is keyword-only (the options both solvers share
    come in the same order as in :func:`elpips.barycenters.solve`).

    Args:
        keyframes: ``[S+1, 3, H, W]`` float in [0, 1] (``S+1 >= 2``), or a sequence of ``[1, 3, H, W]`` /
            ``[3, H, W]`` images. They are never changed.
        metric: an :class:`elpips.Metric` (E-LPIPS, LPIPS or ``l2``) or a metric name (built with ImageNet
            weights on ``device``). A given metric is never changed: not moved, not re-seeded, its generator
            never drawn from.
        frames: total frames on the path, keyframes included (10: A, 8 interior, B), or intervals per keyframe
            segment (see :func:`~elpips.geodesics.path.segment_intervals`).
        steps: Adam steps in total, all stages together.
        lr: learning rate per global step: a callable, a constant, or ``None`` for
            :func:`~elpips.geodesics.options.geodesic_learning_rate` (``0.005 / (1 + 0.02 t'^0.75)``).
        init: ``"linear"`` (the piecewise-linear blend) or a ``[K+1, 3, H, W]`` path in [0, 1] (keyframe rows
            are replaced by the keyframes).
        generator: CPU generator or int seed for the ensemble sampling; ``None``: a generator with a fresh
            nondeterministic seed, recorded in the result (``seed``). The metric's own generator is never used.
        checkpoint: file for the solver state (written atomically every ``checkpoint_every`` steps and at the end).
        resume: continue from ``checkpoint`` (it must exist and match these settings); bit-exact with the
            same generator seed.
        callback: called with a :class:`GeodesicStepInfo` after every step (and after any checkpoint write).
        progress: report progress on stderr (:class:`~elpips.solver.ProgressReport`: energy, stage, ETA).
        device: where a metric given by name is built; with a metric object it must be the metric's device
            (``ValueError`` otherwise: the metric is never moved).
        samples_per_step: ensemble samples per step (each frame is tiled this many times).
        chunk_size: interior frames that carry a graph at once (bounds memory).
        eval_samples: samples for the final per-pair distances (1 for deterministic metrics).
        ensemble_stream: ``"independent"`` (a fresh ensemble sample every step) or ``"stratified"`` (one sample
            per step from a :class:`~elpips.solver.ensemble_stream.StratifiedStream`: flips, permutations, colour
            factors and scale levels stratified over consecutive steps; needs ``samples_per_step=1``).
        coarse_to_fine: start with few interior frames and subdivide (see :func:`plan_levels`).
        spatial: solve the coarse stages at half resolution (needs ``min(H, W) / 2 >= metric.min_size``).
        coarse_fraction: share of ``steps`` spent in the coarse stages.
        eval_generator: generator for the final distances' samples (default: ``generator``, after the last
            step); pass a freshly seeded one to evaluate other paths under the very same samples.
        shard: inside a ``torch.distributed`` process group, split the frames over the ranks (see
            :mod:`elpips.geodesics.sharded`); every rank must call ``solve`` with the same arguments. The
            generators start from rank 0's states; only rank 0 writes the checkpoint (keep it on a filesystem
            every rank can read for ``resume``); the result is the same on every rank. Checkpoints do not depend
            on the number of ranks.
        average_last: return the mean of the iterates of the last ``average_last`` fraction of the steps (in
            ``[0, 1]``; 0: the last iterate; only iterates of the last stage count, see
            :mod:`elpips.solver.averaging`). ``None``: :data:`~elpips.solver.averaging.DEFAULT_AVERAGE_LAST` for
            a stochastic metric (E-LPIPS), 0 for a deterministic one (LPIPS, ``l2``). The note's comparison with
            the starting path applies to the average.

    Returns:
        A :class:`GeodesicResult`; ``frames`` is ``[K+1, 3, H, W]`` on the CPU.

    Examples:
        >>> import torch, elpips
        >>> from elpips.geodesics import solve
        >>> keys = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))   # A and B
        >>> metric = elpips.Metric("elpips-vgg", backbone_weights="random", seed=0)
        >>> result = solve(keys, metric, frames=4, steps=2, generator=0, eval_samples=2)
        >>> result.frames.shape, result.keyframe_indices               # A and B unchanged at both ends
        (torch.Size([4, 3, 32, 32]), [0, 3])
    """
    metric = resolve_metric(metric, device)
    plan = _prepare(keyframes, frames, metric, steps, init, lr, coarse_to_fine, spatial, generator, eval_generator,
                    checkpoint_every, chunk_size, samples_per_step, eval_samples, coarse_fraction, shard,
                    ensemble_stream, average_last)
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    run = _resume(plan, checkpoint) if resume and checkpoint is not None else _start(plan)
    with reporting(metric.name, plan.total_steps, _describe, progress and is_main_process(), callback) as on_step:
        _iterate(plan, run, checkpoint, on_step)
    return _finish(plan, run, eval_samples, eval_generator, progress and is_main_process())
