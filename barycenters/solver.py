"""``solve``: the perceptual barycenter ``argmin_x sum_i w_i d(x, x_i)^p`` by stochastic gradient descent.

The reference procedure (``docs/algorithm.md#barycenters``) with its defaults: start from noise
``0.5 + 0.2 N(0, 1)``, Adam with the learning rate ``0.03 / (1 + 0.02 t'^0.75)``, clip to ``[1e-5, 1 - 1e-5]``
after every step, 100 000 steps. Faster than the reference per reference image: each step compares ``x`` with
all chosen references under one shared ensemble sample (:func:`~elpips.barycenters.step.shared_step`).

``solve`` runs four named phases: :func:`_prepare` (checks and settings), :func:`_start` or :func:`_resume`
(the run's state), :func:`_iterate` (the steps, checkpoints and evaluations) and :func:`_finish` (the result).
No file I/O here except the optional checkpoint (:mod:`elpips.solver.checkpoint`: atomic writes).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from elpips.record import differences, metric_identity, tensor_digest
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
    reference_learning_rate,
    reporting,
    restore_generator,
    save_checkpoint,
)
from elpips.solver.averaging import IterateAverage, averaging_start, resolve_average_last
from elpips.solver.ensemble_stream import StratifiedStream, check_stream_mode
from elpips.solver.metrics import resolve_metric
from elpips.validation import check_positive_int

from .evaluate import Evaluation, evaluate_objective
from .options import check_inputs, check_power, check_refs_per_step, initial_image, normalized_weights
from .step import draw_sample, has_solver_layer, shared_step

REFERENCE_STEPS = 100_000
"""The reference's number of steps ("may take hours")."""

CHECKPOINT_FORMAT = checkpoint_format("barycenter")
RUNNING_DECAY = 0.98
"""Decay of the running (exponential moving average) objective estimate, bias-corrected."""

MAY_CHANGE_ON_RESUME = ("steps", "seed", "init", "eval_every", "checkpoint_every", "log_every", "chunk_size",
                        "device")
"""Settings a resumed run may change (every other one must match its checkpoint's record): a run may continue to
more steps, and spacing, chunking and device do not change the iterate's distribution."""


@dataclass
class BarycenterStepInfo(StepInfo):
    """:class:`~elpips.solver.StepInfo` of a barycenter step.

    Attributes:
        objective: running estimate (bias-corrected moving average of ``loss``).
        image: the current ``[1, 3, H, W]`` iterate in ``[1e-5, 1 - 1e-5]`` (detached; do not modify).
        evaluation: the seeded many-sample estimate if one was taken at this step, else ``None``.
        distances: ``[k]`` this step's distances to the chosen references; ``indices``: which references.
    """

    objective: float
    image: torch.Tensor
    evaluation: Evaluation | None
    distances: torch.Tensor
    indices: torch.Tensor


@dataclass
class BarycenterResult:
    """The outcome of :func:`solve`.

    Attributes:
        image: the barycenter, ``[1, 3, H, W]`` float32 on the CPU, values in ``[1e-5, 1 - 1e-5]``.
        history: running objective every ``log_every`` steps: ``{"step", "loss", "objective", "lr"}``.
        evaluations: the seeded many-sample estimates (start, every ``eval_every`` steps, end: of the iterates'
            average where there is one).
        state: everything needed to continue (the checkpoint's content).
        settings: the run's settings as recorded in checkpoints and logs.
        elapsed_s: solver seconds of the whole run, over every call that continued it; ``steps_run``: steps this
            call ran.
        resumed_from: the checkpoint's step when resumed, else ``None``.
        returned_step: the step whose iterate ``image`` is: the last one (or, with ``averaged_iterates > 0``, the
            average ending there), unless an earlier evaluated iterate (the start among them) had a lower seeded
            objective, which is then returned instead (never silently worse than the start); ``note`` says so in
            one line (``None`` otherwise).
        averaged_iterates: how many iterates the returned average holds (those after step ``averaged_from``;
            0: no averaging, ``image`` is an iterate).
    """

    image: torch.Tensor
    history: list[dict[str, float]]
    evaluations: list[Evaluation]
    state: dict[str, Any]
    settings: dict[str, Any]
    elapsed_s: float
    steps_run: int
    resumed_from: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    returned_step: int | None = None
    note: str | None = None
    averaged_iterates: int = 0
    averaged_from: int | None = None


@dataclass
class _Problem:
    """What every step of one run needs: the metric, the references on its device and the checked options."""

    metric: Any
    references: torch.Tensor
    weights: torch.Tensor
    weights64: torch.Tensor
    power: float
    refs: int
    steps: int
    samples_per_step: int
    chunk_size: int
    checkpoint_every: int
    eval_every: int
    eval_samples: int
    eval_seed: int
    log_every: int
    schedule: Callable[[int], float]
    generator: torch.Generator
    settings: dict[str, Any]
    average_start: int

    @property
    def count(self) -> int:
        return self.references.shape[0]

    def evaluate(self, x: torch.Tensor, step: int) -> Evaluation:
        return evaluate_objective(self.metric, x, self.references, self.weights, self.power, self.eval_samples,
                                  self.eval_seed, step, chunk_size=self.chunk_size)


@dataclass
class _Run:
    """The state a checkpoint holds: the iterate, Adam, the running objective, the iterates' average, the logs
    and the clock."""

    x: torch.Tensor
    optimizer: torch.optim.Optimizer
    average: IterateAverage
    start: int
    running: float
    running_count: int
    history: list[dict[str, float]]
    evaluations: list[Evaluation]
    elapsed: float
    resumed_from: int | None = None
    step_seconds: float = 0.0
    stream: StratifiedStream | None = None
    best: dict[str, Any] | None = None

    def remember(self, evaluation: Evaluation) -> None:
        """Keep the current iterate if its seeded objective is the lowest evaluated so far."""
        if self.best is None or evaluation.objective < self.best["objective"]:
            self.best = {"step": evaluation.step, "objective": evaluation.objective,
                         "image": self.x.detach().cpu().clone()}

    def state(self, problem: _Problem, step: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT, "settings": problem.settings, "step": step,
            "image": self.x.detach().cpu().clone(), "optimizer": self.optimizer.state_dict(),
            "generator": generator_state(problem.generator), "running": [self.running, self.running_count],
            "history": list(self.history), "evaluations": [entry.as_dict() for entry in self.evaluations],
            "elapsed_s": self.elapsed, "stream_seed": None if self.stream is None else self.stream.seed,
            "best": self.best, "average": self.average.state(),
        }


def _metric_device(metric: Any, device: str | torch.device | None, images: torch.Tensor) -> torch.device:
    if hasattr(metric, "device"):
        return torch.device(metric.device)
    if device is not None:
        from elpips.devices import resolve_device

        return resolve_device(device)
    return images.device


def _check_resumable(saved: dict[str, Any], settings: dict[str, Any], path: str | os.PathLike) -> None:
    check_format(saved, "barycenter", path)
    differing = differences(saved["settings"], settings, ignore=MAY_CHANGE_ON_RESUME)
    if differing:
        raise ValueError(f"cannot resume from '{path}': it was written with other settings: {'; '.join(differing)}")


def _prepare(images: torch.Tensor, weights: Any, metric: Any, power: float, steps: int, lr: Any, init: Any,
             refs_per_step: int | str, samples_per_step: int, generator: Any, device: Any,
             checkpoint: str | os.PathLike | None, checkpoint_every: int, resume: bool, eval_every: int | None,
             eval_samples: int, eval_seed: int, log_every: int | None, chunk_size: int,
             ensemble_stream: str, average_last: float | None) -> _Problem:
    """Check every option (one ``ValueError`` for the first bad one) and gather the run's settings."""
    check_inputs(images, getattr(metric, "min_size", 1))
    count, _, height, width = images.shape
    power = check_power(power)
    steps = check_positive_int(steps, "steps", minimum=0)
    refs = check_refs_per_step(refs_per_step, count)
    samples_per_step = check_positive_int(samples_per_step, "samples_per_step")
    check_stream_mode(ensemble_stream, samples_per_step)
    if ensemble_stream == "stratified" and not has_solver_layer(metric):
        raise ValueError("ensemble_stream='stratified' needs an elpips.Metric, not a plain distance function")
    checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
    eval_every = check_positive_int(checkpoint_every if eval_every is None else eval_every, "eval_every")
    eval_samples = check_positive_int(eval_samples, "eval_samples")
    if log_every is None and resume and checkpoint is not None and os.path.isfile(checkpoint):
        log_every = load_checkpoint(checkpoint)["settings"].get("log_every")  # keep the run's spacing
    log_every = check_positive_int(max(1, steps // 1000) if log_every is None else log_every, "log_every")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    average_last = resolve_average_last(average_last, metric)
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    schedule, lr_description = learning_rate_schedule(lr, reference_learning_rate)
    weights64 = normalized_weights(weights, count)
    generator = make_generator(generator)
    run_device = _metric_device(metric, device, images)
    settings: dict[str, Any] = {
        "metric": metric_identity(metric),
        "num_images": count, "height": height, "width": width, "power": power,
        "weights": weights64.tolist(), "refs_per_step": "all" if refs == count else refs,
        "samples_per_step": samples_per_step, "lr": lr_description,
        "init": init if isinstance(init, str) else "image", "steps": steps, "seed": generator.initial_seed(),
        "eval_samples": eval_samples, "eval_seed": eval_seed, "eval_every": eval_every,
        "checkpoint_every": checkpoint_every, "log_every": log_every, "chunk_size": chunk_size,
        "device": str(run_device), "ensemble_stream": ensemble_stream, "average_last": average_last,
        "images_sha256": tensor_digest([images]),
    }
    return _Problem(metric, images.detach().to(device=run_device, dtype=torch.float32),
                    weights64.to(device=run_device, dtype=torch.float32), weights64, power, refs, steps,
                    samples_per_step, chunk_size, checkpoint_every, eval_every, eval_samples, eval_seed, log_every,
                    schedule, generator, settings, averaging_start(steps, average_last))


def _start(problem: _Problem, init: str | torch.Tensor) -> _Run:
    """A fresh run: the initial image, a new Adam, the objective at step 0."""
    x = initial_image(init, problem.references, problem.weights64, problem.generator).requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=problem.schedule(0))
    run = _Run(x, optimizer, IterateAverage(problem.average_start), 0, 0.0, 0, [], [problem.evaluate(x, 0)], 0.0)
    run.remember(run.evaluations[0])
    if problem.settings["ensemble_stream"] == "stratified":
        run.stream = StratifiedStream(int(torch.randint(0, 2**62, (1,), generator=problem.generator)))
    return run


def _resume(problem: _Problem, checkpoint: str | os.PathLike) -> _Run:
    """The run saved in ``checkpoint`` (which must match the settings), continuing bit-exactly."""
    saved = load_checkpoint(checkpoint)
    _check_resumable(saved, problem.settings, checkpoint)
    x = saved["image"].to(problem.references.device).requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=problem.schedule(0))
    optimizer.load_state_dict(saved["optimizer"])
    restore_generator(problem.generator, saved["generator"])
    problem.settings["seed"] = saved["settings"]["seed"]
    step = int(saved["step"])
    average = IterateAverage.restore(saved["average"], problem.average_start, step, x.device)
    return _Run(x, optimizer, average, step, float(saved["running"][0]), int(saved["running"][1]),
                list(saved["history"]),
                [Evaluation(**entry) for entry in saved["evaluations"]], float(saved["elapsed_s"]),
                resumed_from=step,
                stream=None if saved.get("stream_seed") is None else StratifiedStream(saved["stream_seed"]),
                best=saved.get("best"))


def _step(problem: _Problem, run: _Run, step: int) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """One Adam step at global step ``step``: ``(learning rate, loss, distances [k], reference indices [k])``."""
    rate = float(problem.schedule(step))
    for group in run.optimizer.param_groups:
        group["lr"] = rate
    count, (height, width) = problem.count, problem.references.shape[-2:]
    if problem.refs == count:
        indices = torch.arange(count)
    else:
        indices = torch.randperm(count, generator=problem.generator)[:problem.refs]
    chosen = indices.to(problem.references.device)
    if run.stream is None:
        sample = draw_sample(problem.metric, problem.samples_per_step, height, width, problem.generator)
    else:
        sample = run.stream.sample(problem.metric, step, height, width)
    run.optimizer.zero_grad(set_to_none=True)
    coefficients = problem.weights[chosen] * (count / problem.refs)
    distances = shared_step(problem.metric, run.x, problem.references[chosen], coefficients, problem.power, sample,
                            problem.samples_per_step, problem.chunk_size)
    run.optimizer.step()
    clip_(run.x)
    loss = float((coefficients * distances.pow(problem.power)).sum())
    return rate, loss, distances, indices


def _iterate(problem: _Problem, run: _Run, checkpoint: str | os.PathLike | None,
             callback: Callable[[BarycenterStepInfo], None] | None) -> None:
    """Run the steps from ``run.start`` to ``problem.steps``: log, evaluate, checkpoint and report each one."""
    steps = problem.steps
    for step in range(run.start, steps):
        began = time.perf_counter()
        rate, loss, distances, indices = _step(problem, run, step)
        run.running = RUNNING_DECAY * run.running + (1 - RUNNING_DECAY) * loss
        run.running_count += 1
        objective = run.running / (1 - RUNNING_DECAY**run.running_count)
        done = step + 1
        run.average.update(run.x, done)
        run.step_seconds += time.perf_counter() - began
        if done % problem.log_every == 0 or done == steps or done == 1:
            run.history.append({"step": done, "loss": loss, "objective": objective, "lr": rate})
        evaluation = None
        if (done % problem.eval_every == 0 or done == steps) and not (done == steps and run.average.count):
            evaluation = problem.evaluate(run.x, done)  # an averaged run's end is evaluated by _finish
            run.evaluations.append(evaluation)
            run.remember(evaluation)
        run.elapsed += time.perf_counter() - began
        if checkpoint is not None and (done % problem.checkpoint_every == 0 or done == steps):
            save_checkpoint(checkpoint, run.state(problem, done))
        if callback is not None:
            callback(BarycenterStepInfo(done, steps, rate, loss, time.perf_counter() - began, objective,
                                        run.x.detach(), evaluation, distances, indices))


def _finish(problem: _Problem, run: _Run, progress: bool = False) -> BarycenterResult:
    """The final evaluation of the last iterate, or of the iterates' average (unless the last step took one),
    and the result."""
    final_step = max(run.start, problem.steps)
    averaged = run.average.value()
    last = run.x.detach() if averaged is None else averaged
    if not run.evaluations or run.evaluations[-1].step != final_step:  # an averaged run's end: always here
        what = "final" if averaged is None else f"averaged ({run.average.count} iterates)"
        with phase(f"barycenter: {what} objective estimate ({problem.eval_samples} samples)", enabled=progress):
            run.evaluations.append(problem.evaluate(last, final_step))
    final = run.evaluations[-1]
    image, returned_step, note = last.cpu().clone(), final_step, None
    averaged_iterates = run.average.count
    if run.best is not None and run.best["objective"] < final.objective:
        image, returned_step = run.best["image"].clone(), int(run.best["step"])
        kind, averaged_iterates = "last iterate" if averaged is None else "iterates' average", 0
        note = (f"barycenter: the {kind}'s objective {final.objective:.4g} (step {final_step}) is above the "
                f"best evaluated one, {run.best['objective']:.4g} at step {returned_step}: returning that iterate")
    steps_run = max(0, problem.steps - run.start)
    timings = {"solver_seconds": run.elapsed, "step_seconds_this_call": run.step_seconds,
               "seconds_per_step": run.step_seconds / steps_run if steps_run else 0.0}
    return BarycenterResult(image=image, history=run.history, evaluations=run.evaluations,
                            state=run.state(problem, final_step), settings=problem.settings, elapsed_s=run.elapsed,
                            steps_run=steps_run, resumed_from=run.resumed_from, timings=timings,
                            returned_step=returned_step, note=note, averaged_iterates=averaged_iterates,
                            averaged_from=run.average.start if averaged_iterates else None)


def _describe(info: BarycenterStepInfo) -> dict[str, str]:
    return {"objective": f"{info.objective:.4g}"}


def solve(
    images: torch.Tensor,
    metric: Any = "elpips-vgg",
    *,
    weights: Sequence[float] | torch.Tensor | None = None,
    power: float = 2.0,
    steps: int = REFERENCE_STEPS,
    lr: float | Callable[[int], float] | None = None,
    init: str | torch.Tensor = "noise",
    generator: torch.Generator | int | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1000,
    resume: bool = False,
    callback: Callable[[BarycenterStepInfo], None] | None = None,
    progress: bool = False,
    device: str | torch.device | None = None,
    samples_per_step: int = 1,
    chunk_size: int = 16,
    eval_samples: int = 32,
    ensemble_stream: str = "independent",
    refs_per_step: int | str = "all",
    eval_every: int | None = None,
    eval_seed: int = 0,
    log_every: int | None = None,
    average_last: float | None = None,
) -> BarycenterResult:
    """Minimise ``sum_i w_i * d(x, images[i])^power`` over images ``x`` in ``[1e-5, 1 - 1e-5]``.

    The inputs and the metric are positional, every option is keyword-only (the options both solvers share come
    in the same order as in :func:`elpips.geodesics.solve`).

    Args:
        images: ``[N, 3, H, W]`` float in [0, 1], the inputs ``x_i``.
        metric: an :class:`elpips.Metric` (E-LPIPS, LPIPS or ``l2``), a metric name (built with ImageNet weights
            on ``device``), or any differentiable ``d(x, y) -> [B]`` with the ``Metric`` call signature. A given
            metric is never changed: not moved, not re-seeded, its generator never drawn from.
        weights: ``N`` non-negative weights (normalised to sum 1); ``None``: equal.
        power: ``p >= 1``; 2 is the barycenter (the paper), 1 a perceptual median.
        steps: total Adam steps of the run (a resumed run continues to this count).
        lr: ``None`` the reference schedule ``0.03 / (1 + 0.02 t'^0.75)``; a number a constant rate; a callable
            ``step -> rate``.
        init: ``"noise"`` (the reference), ``"mean"`` (weighted pixel mean) or an image ``[1, 3, H, W]``.
        generator: CPU generator or int seed for every random choice of the run (noise start, references,
            ensemble samples); ``None``: a generator with a fresh nondeterministic seed, recorded in the result
            (``settings["seed"]``). The metric's own generator is never used.
        checkpoint: path of the checkpoint file, written atomically every ``checkpoint_every`` steps and at the end.
        resume: continue from ``checkpoint`` (which must exist and match the settings). With the same settings the
            result is bit-identical to an uninterrupted run.
        callback: called with a :class:`BarycenterStepInfo` after every step (after any checkpoint of that step).
        progress: report progress on stderr (:class:`~elpips.solver.ProgressReport`: objective, ETA).
        device: where a metric given by name is built; with a metric object it must be the metric's device
            (``ValueError`` otherwise: the metric is never moved).
        samples_per_step: ensemble draws per step (each distance is their mean).
        chunk_size: references per forward pass (bounds memory for large ``N``).
        eval_samples: draws of the seeded evaluations (the same draws every time, from ``eval_seed``).
        ensemble_stream: ``"independent"`` (a fresh ensemble sample every step) or ``"stratified"`` (one sample
            per step from a :class:`~elpips.solver.ensemble_stream.StratifiedStream`: flips, permutations, colour
            factors and scale levels stratified over consecutive steps; needs an ``elpips.Metric`` and
            ``samples_per_step=1``).
        refs_per_step: ``"all"`` or ``k``: references compared with ``x`` per step (``k`` drawn uniformly without
            replacement, terms scaled by ``N / k`` so the step loss is unbiased; ``1`` is the reference's choice).
        eval_every: steps between seeded evaluations (default ``checkpoint_every``); also at start and end.
        eval_seed: seed of the evaluations' draws.
        log_every: steps between history entries (default ``max(1, steps // 1000)``; on resume, the run's).
        average_last: return the mean of the iterates of the last ``average_last`` fraction of the steps (in
            ``[0, 1]``; 0: the last iterate; see :mod:`elpips.solver.averaging`). ``None``:
            :data:`~elpips.solver.averaging.DEFAULT_AVERAGE_LAST` for a stochastic metric (E-LPIPS), 0 for a
            deterministic one (LPIPS, ``l2``). The average is evaluated at the
            end like the last iterate would be. A resumed run with more ``steps`` restarts its average at
            ``max(new start, resumed step)``.

    Returns:
        A :class:`BarycenterResult`.

    Examples:
        >>> import torch, elpips
        >>> from elpips.barycenters import solve
        >>> images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        >>> metric = elpips.Metric("elpips-vgg", backbone_weights="random", seed=0)
        >>> result = solve(images, metric, steps=2, generator=0, eval_samples=2)
        >>> result.image.shape
        torch.Size([1, 3, 32, 32])
    """
    metric = resolve_metric(metric, device)
    problem = _prepare(images, weights, metric, power, steps, lr, init, refs_per_step, samples_per_step, generator,
                       device, checkpoint, checkpoint_every, resume, eval_every, eval_samples, eval_seed, log_every,
                       chunk_size, ensemble_stream, average_last)
    # _prepare refuses resume=True without a checkpoint
    run = _resume(problem, checkpoint) if resume and checkpoint is not None else _start(problem, init)
    with reporting("barycenter", problem.steps, _describe, progress, callback) as on_step:
        _iterate(problem, run, checkpoint, on_step)
    return _finish(problem, run, progress)
