"""``solve``: the perceptual barycenter ``argmin_x sum_i w_i d(x, x_i)^p`` by stochastic gradient descent.

The reference procedure (spec section 6) with its defaults: start from noise ``0.5 + 0.2 N(0, 1)``, Adam with the
learning rate ``0.03 / (1 + 0.02 t'^0.75)``, clip to ``[1e-5, 1 - 1e-5]`` after every step, 100 000 steps.
Faster than the reference per reference image: each step compares ``x`` with all chosen references under one
shared ensemble sample (:func:`~elpips.barycenters.step.shared_step`). No file I/O here except the optional
checkpoint (``elpips.checkpoint``: atomic writes).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from elpips.checkpoint import generator_state, load_checkpoint, restore_generator, save_checkpoint
from elpips.ensemble_stream import StratifiedStream, check_stream_mode

from .evaluate import Evaluation, evaluate_objective
from .options import (CLIP_HIGH, CLIP_LOW, check_inputs, check_metric_device, check_positive_int, check_power,
                      check_refs_per_step, images_digest, initial_image, learning_rate_schedule, normalized_weights)
from .step import draw_sample, has_solver_layer, shared_step

REFERENCE_STEPS = 100_000
"""The reference's number of steps ("may take hours")."""

CHECKPOINT_FORMAT = "elpips-barycenter/1"
RUNNING_DECAY = 0.98
"""Decay of the running (exponential moving average) objective estimate, bias-corrected."""

RESUME_KEYS = ("metric", "backbone_weights", "num_images", "height", "width", "power", "weights", "refs_per_step",
               "samples_per_step", "lr", "images_sha256", "eval_samples", "eval_seed", "ensemble_stream")
"""Settings a resumed run must share with its checkpoint."""


@dataclass
class StepInfo:
    """What a callback sees after each step.

    Attributes:
        step: steps completed (1-based); ``steps``: the run's total.
        loss: this step's objective estimate (one ensemble sample, chosen references).
        objective: running estimate (bias-corrected moving average of ``loss``).
        lr: the learning rate used by this step.
        image: the current ``[1, 3, H, W]`` iterate in ``[1e-5, 1 - 1e-5]`` (detached; do not modify).
        evaluation: the seeded many-sample estimate if one was taken at this step, else ``None``.
        distances: ``[k]`` this step's distances to the chosen references; ``indices``: which references.
    """

    step: int
    steps: int
    loss: float
    objective: float
    lr: float
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
        evaluations: the seeded many-sample estimates (start, every ``eval_every`` steps, end).
        state: everything needed to continue (the checkpoint's content).
        settings: the run's settings as recorded in checkpoints and logs.
        elapsed_s: solver seconds over all sessions of the run; ``steps_run``: steps this call ran.
        resumed_from: the checkpoint's step when resumed, else ``None``.
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


def _make_generator(generator: torch.Generator | int | None) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        if generator.device.type != "cpu":
            raise ValueError("generator must be a CPU torch.Generator (samples are drawn on the CPU)")
        return generator
    made = torch.Generator()
    if generator is None:
        made.seed()
    elif isinstance(generator, int) and not isinstance(generator, bool):
        made.manual_seed(generator)
    else:
        raise ValueError(f"generator must be a torch.Generator, an int seed or None, got {generator!r}")
    return made


def _resolve_metric(metric: Any, device: str | torch.device | None) -> Any:
    if isinstance(metric, str):
        from elpips import Metric

        return Metric(metric, device=device)
    if not callable(metric):
        raise ValueError(f"metric must be an elpips.Metric, a metric name or a distance function, got {metric!r}")
    check_metric_device(metric, device)
    return metric


def _metric_device(metric: Any, device: str | torch.device | None, images: torch.Tensor) -> torch.device:
    if hasattr(metric, "device"):
        return torch.device(metric.device)
    if device is not None:
        from elpips.devices import resolve_device

        return resolve_device(device)
    return images.device


def _check_resumable(saved: dict[str, Any], settings: dict[str, Any], path: str | os.PathLike) -> None:
    if saved.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"'{path}' is not a barycenter checkpoint (format {saved.get('format')!r})")
    for key in RESUME_KEYS:
        if saved["settings"].get(key) != settings.get(key):
            raise ValueError(f"cannot resume from '{path}': {key} was {saved['settings'].get(key)!r}, "
                             f"now {settings.get(key)!r}")


def solve(
    images: torch.Tensor,
    weights: Sequence[float] | torch.Tensor | None = None,
    metric: Any = "elpips-vgg",
    power: float = 2.0,
    steps: int = REFERENCE_STEPS,
    lr: float | Callable[[int], float] | None = None,
    init: str | torch.Tensor = "noise",
    refs_per_step: int | str = "all",
    samples_per_step: int = 1,
    generator: torch.Generator | int | None = None,
    device: str | torch.device | None = None,
    callback: Callable[[StepInfo], None] | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1000,
    resume: bool = False,
    eval_every: int | None = None,
    eval_samples: int = 32,
    eval_seed: int = 0,
    log_every: int | None = None,
    chunk_size: int = 16,
    progress: bool = False,
    ensemble_stream: str = "independent",
) -> BarycenterResult:
    """Minimise ``sum_i w_i * d(x, images[i])^power`` over images ``x`` in ``[1e-5, 1 - 1e-5]``.

    Args:
        images: ``[N, 3, H, W]`` float in [0, 1], the inputs ``x_i``.
        weights: ``N`` non-negative weights (normalised to sum 1); ``None``: equal.
        metric: an :class:`elpips.Metric` (E-LPIPS, LPIPS or ``l2``), a metric name (built with ImageNet weights
            on ``device``), or any differentiable ``d(x, y) -> [B]`` with the ``Metric`` call signature.
        power: ``p >= 1``; 2 is the barycenter (the paper), 1 a perceptual median.
        steps: total Adam steps of the run (a resumed run continues to this count).
        lr: ``None`` the reference schedule ``0.03 / (1 + 0.02 t'^0.75)``; a number a constant rate; a callable
            ``step -> rate``.
        init: ``"noise"`` (the reference), ``"mean"`` (weighted pixel mean) or an image ``[1, 3, H, W]``.
        refs_per_step: ``"all"`` or ``k``: references compared with ``x`` per step (``k`` drawn uniformly without
            replacement, terms scaled by ``N / k`` so the step loss is unbiased; ``1`` is the reference's choice).
        samples_per_step: ensemble draws per step (each distance is their mean).
        generator: CPU generator or int seed for every random choice of the run (noise start, references,
            ensemble samples); ``None``: a fresh random seed (recorded in ``settings``).
        device: only for a metric given by name, or to assert the metric's device.
        callback: called with a :class:`StepInfo` after every step (after any checkpoint of that step).
        checkpoint: path of the checkpoint file, written atomically every ``checkpoint_every`` steps and at the end.
        resume: continue from ``checkpoint`` (which must exist and match the settings). With the same settings the
            result is bit-identical to an uninterrupted run.
        eval_every: steps between seeded evaluations (default ``checkpoint_every``); also at start and end.
        eval_samples, eval_seed: draws and seed of those evaluations (the same draws every time).
        log_every: steps between history entries (default ``max(1, steps // 1000)``; on resume, the run's).
        chunk_size: references per forward pass (bounds memory for large ``N``).
        progress: show a tqdm bar (objective, ETA) on stderr.
        ensemble_stream: ``"independent"`` (a fresh ensemble sample every step) or ``"stratified"`` (one sample
            per step from a :class:`~elpips.ensemble_stream.StratifiedStream`: flips, permutations, colour
            factors and scale levels stratified over consecutive steps; needs an ``elpips.Metric`` and
            ``samples_per_step=1``).

    Returns:
        A :class:`BarycenterResult`.
    """
    metric = _resolve_metric(metric, device)
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
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    schedule, lr_description = learning_rate_schedule(lr)
    weights64 = normalized_weights(weights, count)
    generator = _make_generator(generator)
    run_device = _metric_device(metric, device, images)
    references = images.detach().to(device=run_device, dtype=torch.float32)
    weights_device = weights64.to(device=run_device, dtype=torch.float32)

    settings: dict[str, Any] = {
        "metric": getattr(metric, "name", getattr(metric, "__name__", type(metric).__name__)),
        "backbone_weights": getattr(getattr(metric, "weights_info", None), "source", None),
        "num_images": count, "height": height, "width": width, "power": power,
        "weights": weights64.tolist(), "refs_per_step": "all" if refs == count else refs,
        "samples_per_step": samples_per_step, "lr": lr_description,
        "init": init if isinstance(init, str) else "image", "steps": steps, "seed": generator.initial_seed(),
        "eval_samples": eval_samples, "eval_seed": eval_seed, "eval_every": eval_every,
        "checkpoint_every": checkpoint_every, "log_every": log_every, "chunk_size": chunk_size,
        "device": str(run_device), "ensemble_stream": ensemble_stream,
        "images_sha256": images_digest(images),
    }

    def evaluate(x: torch.Tensor, step: int) -> Evaluation:
        return evaluate_objective(metric, x, references, weights_device, power, eval_samples, eval_seed, step,
                                  chunk_size=chunk_size)

    resumed_from = None
    if resume:
        saved = load_checkpoint(checkpoint)
        _check_resumable(saved, settings, checkpoint)
        x = saved["image"].to(run_device).requires_grad_(True)
        optimizer = torch.optim.Adam([x], lr=schedule(0))
        optimizer.load_state_dict(saved["optimizer"])
        restore_generator(generator, saved["generator"])
        start = resumed_from = int(saved["step"])
        running, running_count = float(saved["running"][0]), int(saved["running"][1])
        history = list(saved["history"])
        evaluations = [Evaluation(**entry) for entry in saved["evaluations"]]
        elapsed = float(saved["elapsed_s"])
        settings["seed"] = saved["settings"]["seed"]
        stream_seed = saved.get("stream_seed")
    else:
        x = initial_image(init, references, weights64, generator).requires_grad_(True)
        optimizer = torch.optim.Adam([x], lr=schedule(0))
        start, running, running_count, history, elapsed = 0, 0.0, 0, [], 0.0
        evaluations = [evaluate(x, 0)]
        stream_seed = int(torch.randint(0, 2**62, (1,), generator=generator)) \
            if ensemble_stream == "stratified" else None
    stream = None if stream_seed is None else StratifiedStream(stream_seed)

    def state(step: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT, "settings": settings, "step": step, "image": x.detach().cpu().clone(),
            "optimizer": optimizer.state_dict(), "generator": generator_state(generator),
            "running": [running, running_count], "history": list(history),
            "evaluations": [entry.as_dict() for entry in evaluations], "elapsed_s": elapsed,
            "stream_seed": stream_seed,
        }

    from tqdm import tqdm

    bar = tqdm(total=steps, initial=min(start, steps), desc="barycenter", unit="step", file=sys.stderr,
               dynamic_ncols=True, disable=not progress, leave=False)
    scale = count / refs
    step_seconds = 0.0
    try:
        for step in range(start, steps):
            began = time.perf_counter()
            rate = float(schedule(step))
            for group in optimizer.param_groups:
                group["lr"] = rate
            if refs == count:
                indices = torch.arange(count)
            else:
                indices = torch.randperm(count, generator=generator)[:refs]
            chosen = indices.to(run_device)
            if stream is None:
                sample = draw_sample(metric, samples_per_step, height, width, generator)
            else:
                sample = stream.sample(metric, step, height, width)
            optimizer.zero_grad(set_to_none=True)
            coefficients = weights_device[chosen] * scale
            distances = shared_step(metric, x, references[chosen], coefficients, power, sample,
                                    samples_per_step, chunk_size)
            optimizer.step()
            with torch.no_grad():
                x.clamp_(CLIP_LOW, CLIP_HIGH)
            loss = float((coefficients * distances.pow(power)).sum())
            running = RUNNING_DECAY * running + (1 - RUNNING_DECAY) * loss
            running_count += 1
            objective = running / (1 - RUNNING_DECAY**running_count)
            done = step + 1
            step_seconds += time.perf_counter() - began
            if done % log_every == 0 or done == steps or done == 1:
                history.append({"step": done, "loss": loss, "objective": objective, "lr": rate})
            evaluation = None
            if done % eval_every == 0 or done == steps:
                evaluation = evaluate(x, done)
                evaluations.append(evaluation)
            elapsed += time.perf_counter() - began
            if checkpoint is not None and (done % checkpoint_every == 0 or done == steps):
                save_checkpoint(checkpoint, state(done))
            bar.set_postfix(objective=f"{objective:.4g}", refresh=False)
            bar.update(1)
            if callback is not None:
                callback(StepInfo(done, steps, loss, objective, rate, x.detach(), evaluation, distances,
                                  indices))
    finally:
        bar.close()
    final_step = max(start, steps)
    if not evaluations or evaluations[-1].step != final_step:
        evaluations.append(evaluate(x, final_step))
    steps_run = max(0, steps - start)
    timings = {"solver_seconds": elapsed, "step_seconds_this_session": step_seconds,
               "seconds_per_step": step_seconds / steps_run if steps_run else 0.0}
    return BarycenterResult(image=x.detach().cpu().clone(), history=history, evaluations=evaluations,
                            state=state(final_step), settings=settings, elapsed_s=elapsed, steps_run=steps_run,
                            resumed_from=resumed_from, timings=timings)
