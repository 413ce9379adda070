"""Adversarial attacks on perceptual metrics (paper section 3) and their fresh-sample evaluation.

* **A1** — pull toward a target at constant distance: starting from the source ``s``, move ``x`` as close (L2) to
  a target ``t`` as possible while ``d(x, s) <= d(a, s)`` for an anchor ``a``.
* **A2** — push away under a small budget: maximise ``d(x, s)`` subject to ``RMS(x - s) <= epsilon`` and
  ``x`` in ``[0, 1]`` (projected gradient ascent).

Against E-LPIPS the attacker uses expectation-over-transformation gradients: every step averages the gradient
of ``samples_per_step`` fresh ensemble samples (transform and dropout). The attacker's own estimates
(``AttackResult.trace``) are never the success measure: :func:`evaluate_a1` and :func:`evaluate_a2` re-estimate
every distance with many samples from a separate generator, with 95% half-widths and paired differences.

Budgets are RMS pixel differences: ``RMS(x - s) = ||x - s||_2 / sqrt(3 H W)`` (independent of image size).
All functions take and return float ``[N, 3, H, W]`` tensors in ``[0, 1]`` on the metric's device and do no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from elpips.estimate import Estimate, summarize
from elpips.metric import Metric
from elpips.validation import check_images, check_positive_int, check_same_shape

Progress = Callable[[int, torch.Tensor], None]
"""``progress(step, attacker_estimate [N])``, called after every attack step."""

EIGHT_BIT = 255
"""``levels`` for 8-bit image files: values ``k / 255`` are exactly what a saved PNG decodes to."""


# -- norms and projections ---------------------------------------------------------------------------------------
def l2_norm(images: torch.Tensor) -> torch.Tensor:
    """``[N, ...]`` -> ``[N]`` float64 Euclidean norm over everything but the batch dimension."""
    return images.detach().double().flatten(1).norm(dim=1)


def rms(images: torch.Tensor) -> torch.Tensor:
    """``[N, ...]`` -> ``[N]`` float64 root-mean-square over everything but the batch dimension."""
    return l2_norm(images) / math.sqrt(images[0].numel())


def _per_image(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[N]`` -> ``[N, 1, 1, 1]`` (broadcastable against ``like``)."""
    return values.reshape(-1, *([1] * (like.dim() - 1)))


def project_l2_box(points: torch.Tensor, center: torch.Tensor, radius: torch.Tensor | float,
                   iterations: int = 64) -> torch.Tensor:
    """Exact Euclidean projection onto ``{x : ||x - center||_2 <= radius, 0 <= x <= 1}``, image by image.

    The minimiser is ``clip(center + tau (points - center), 0, 1)`` for the largest ``tau`` in ``[0, 1]`` whose
    norm is within the radius (KKT conditions of the separable problem; the norm grows monotonically with
    ``tau`` because ``center`` lies in the box). ``tau`` is found by bisection in float64 and the result is
    checked after rounding to the input dtype, so ``||x - center||_2 <= radius`` holds exactly for the returned
    values (evaluated in float64).

    Args:
        points: ``[N, 3, H, W]`` (any values).
        center: ``[N, 3, H, W]`` in ``[0, 1]``.
        radius: L2 radius (not RMS), a float or ``[N]``, ``>= 0``.
        iterations: bisection steps (64 resolve ``tau`` to float64 precision).

    Returns:
        ``[N, 3, H, W]`` in ``[0, 1]``, dtype of ``points``.
    """
    c = center.detach().double()
    delta = points.detach().double() - c
    radius = torch.as_tensor(radius, dtype=torch.float64, device=c.device).expand(points.shape[0])
    if bool((radius < 0).any()):
        raise ValueError("project_l2_box: radius must be non-negative")

    def candidate(tau: torch.Tensor) -> torch.Tensor:
        return (c + _per_image(tau, c) * delta).clamp(0, 1)

    def norm(x: torch.Tensor) -> torch.Tensor:
        return (x - c).flatten(1).norm(dim=1)

    low = torch.zeros_like(radius)
    high = torch.ones_like(radius)
    for _ in range(iterations):
        middle = (low + high) / 2
        ok = norm(candidate(middle)) <= radius
        low = torch.where(ok, middle, low)
        high = torch.where(ok, high, middle)
    low = torch.where(norm(candidate(torch.ones_like(radius))) <= radius, torch.ones_like(radius), low)
    result = candidate(low).to(points.dtype)
    for _ in range(100):  # rounding to float32 can add ~1e-7 relative: shrink tau until the budget holds exactly
        over = norm(result.double()) > radius
        if not bool(over.any()):
            return result
        low = torch.where(over, low * (1 - 1e-6), low)
        result = candidate(low).to(points.dtype)
    raise RuntimeError("project_l2_box: could not meet the radius after rounding")  # unreachable in practice


def _grid(levels: int | None) -> int | None:
    return None if levels is None else check_positive_int(levels, "levels")


def quantize_toward(images: torch.Tensor, center: torch.Tensor, levels: int = EIGHT_BIT) -> torch.Tensor:
    """Round every value to the grid ``k / levels`` toward ``center``, so no value moves farther from it.

    When ``center`` lies on the grid (8-bit images do for ``levels = 255``) the result satisfies
    ``|q - center| <= |images - center|`` elementwise, and the saved file decodes to exactly these values.

    Args:
        images, center: ``[N, 3, H, W]`` in ``[0, 1]``.
        levels: grid size (255 for 8-bit files).

    Returns:
        ``[N, 3, H, W]`` float32 values ``k / levels`` (``center``'s value where ``center`` is off the grid and
        rounding would cross it).
    """
    levels = check_positive_int(levels, "levels")
    scaled = images.detach().double() * levels
    up = images >= center
    steps = torch.where(up, torch.floor(scaled), torch.ceil(scaled)).clamp(0, levels)
    quantized = steps.float() / levels
    crossed = torch.where(up, quantized < center, quantized > center)
    return torch.where(crossed, center.float(), quantized)


def quantize_within_budget(images: torch.Tensor, center: torch.Tensor, radius: torch.Tensor | float,
                           levels: int = EIGHT_BIT) -> torch.Tensor:
    """Round to the grid ``k / levels`` as near as possible while keeping ``||q - center||_2 <= radius``.

    Rounds to nearest, then, where that breaks the budget, rounds toward ``center`` instead for the fewest
    values that restore it (cheapest extra rounding error per unit of norm first). Falls back to
    :func:`quantize_toward` for an image when float rounding leaves it over budget.

    Args:
        images, center: ``[N, 3, H, W]`` in ``[0, 1]``, ``||images - center||_2 <= radius``; ``center`` on the
            grid for the guarantee.
        radius: L2 radius, float or ``[N]``.
        levels: grid size (255 for 8-bit files).

    Returns:
        ``[N, 3, H, W]`` float32 on the grid, in ``[0, 1]``, within the budget (checked in float64).
    """
    levels = check_positive_int(levels, "levels")
    radius = torch.as_tensor(radius, dtype=torch.float64, device=images.device).expand(images.shape[0])
    scaled = images.detach().double().flatten(1) * levels
    base = center.detach().double().flatten(1) * levels
    nearest = torch.round(scaled).clamp(0, levels)
    toward = quantize_toward(images, center, levels).double().flatten(1) * levels
    result = nearest.clone()
    for index in range(images.shape[0]):
        excess = (nearest[index] - base[index]).square().sum() - (radius[index] * levels) ** 2
        if excess <= 0:
            continue
        gain = (nearest[index] - base[index]).square() - (toward[index] - base[index]).square()
        cost = (toward[index] - scaled[index]).square() - (nearest[index] - scaled[index]).square()
        candidates = torch.nonzero(gain > 0).flatten()
        order = candidates[torch.argsort(cost[candidates] / gain[candidates])]
        needed = int(torch.searchsorted(torch.cumsum(gain[order], 0), excess * (1 + 1e-9) + 1e-9)) + 1
        result[index, order[:needed]] = toward[index, order[:needed]]
    quantized = (result.round().float() / levels).reshape(images.shape)  # float32 k / levels, as files decode
    over = l2_norm(quantized - center.double()) > radius
    if bool(over.any()):
        fallback = quantize_toward(images, center, levels)
        quantized = torch.where(_per_image(over, quantized), fallback, quantized)
    return quantized


# -- shared pieces -------------------------------------------------------------------------------------------------
def _check_positive_float(value: float, name: str) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _checked(metric: Metric, **named: torch.Tensor) -> list[torch.Tensor]:
    """Check images (``[N,3,H,W]`` in [0,1], metric's minimum size, equal shapes); move to the metric device."""
    result = []
    first_name, first = "", None
    for name, images in named.items():
        check_images(images, name, metric.min_size)
        if first is None:
            first_name, first = name, images
        else:
            check_same_shape(first, images, first_name, name)
        result.append(images.detach().to(metric.device, torch.float32))
    return result


def _value_and_grad(metric: Metric, x: torch.Tensor, source: torch.Tensor, samples: int,
                    generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean distance of ``samples`` ensemble samples ``[N]`` and its gradient w.r.t. ``x`` ``[N, 3, H, W]``."""
    variable = x.detach().requires_grad_(True)
    distances = metric.sample_distances(variable, source, samples, generator).mean(dim=0)
    (gradient,) = torch.autograd.grad(distances.sum(), variable)
    return distances.detach(), gradient.detach()


def _unit(vectors: torch.Tensor) -> torch.Tensor:
    """Per-image unit vectors (zero stays zero)."""
    norms = vectors.flatten(1).norm(dim=1)
    return vectors / _per_image(torch.where(norms > 0, norms, torch.ones_like(norms)), vectors)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(dim=1)


def _cosine_schedule(step: int, steps: int, initial: float, final_fraction: float = 0.1) -> float:
    """``initial`` decaying to ``initial * final_fraction`` over ``steps`` (half a cosine)."""
    progress = step / max(1, steps - 1)
    return initial * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass
class AttackResult:
    """What an attack returns.

    Attributes:
        images: ``[N, 3, H, W]`` attacked images in ``[0, 1]``.
        start: ``[N, 3, H, W]`` the starting point (A2: a random point on the budget sphere; A1: the source).
        trace: ``[steps, N]`` the attacker's own ``samples_per_step``-sample estimates of ``d(x, s)`` at each
            step (for monitoring only; never a success measure).
        threshold: A1 only: ``[N]`` the attacker's estimate of ``d(anchor, source)`` that it kept ``d(x, s)``
            below; ``None`` for A2.
    """

    images: torch.Tensor
    start: torch.Tensor
    trace: torch.Tensor
    threshold: torch.Tensor | None = None


# -- A2 ------------------------------------------------------------------------------------------------------------
def attack_a2(
    metric: Metric,
    source: torch.Tensor,
    epsilon: float,
    steps: int = 100,
    samples_per_step: int = 8,
    step_size: float = 0.25,
    momentum: float = 0.75,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
    levels: int | None = None,
) -> AttackResult:
    """A2: maximise ``d(x, s)`` subject to ``RMS(x - s) <= epsilon`` and ``0 <= x <= 1``.

    Projected gradient ascent from a random point on the budget sphere: each step averages the gradient of
    ``samples_per_step`` ensemble samples (EOT; LPIPS and L2 are deterministic and use one), removes its
    outward radial part when ``x`` is on the sphere, adds momentum, takes a normalised step of
    ``step_size * epsilon`` (RMS; cosine-decayed to a tenth) and projects exactly onto the budget and the box
    (:func:`project_l2_box`).

    Args:
        metric: the metric to attack (its weights are frozen; only ``x`` is optimised).
        source: ``[N, 3, H, W]`` in ``[0, 1]``.
        epsilon: budget, RMS pixel difference (``||x - s||_2 <= epsilon * sqrt(3 H W)``), ``> 0``.
        steps: gradient steps (``>= 1``).
        samples_per_step: ensemble samples averaged per gradient (E-LPIPS; ``>= 1``).
        step_size: initial step length as a fraction of ``epsilon`` (``> 0``).
        momentum: weight of the previous direction, in ``[0, 1)``.
        generator: CPU generator for the start and the ensemble samples (default: the metric's).
        progress: called after each step.
        levels: round the result to ``k / levels`` within the budget (255: exactly what an 8-bit file holds);
            ``None`` keeps float values.

    Returns:
        :class:`AttackResult` with ``images`` inside the budget and the box exactly.
    """
    (source,) = _checked(metric, source=source)
    _check_positive_float(epsilon, "epsilon")
    check_positive_int(steps, "steps")
    check_positive_int(samples_per_step, "samples_per_step")
    _check_positive_float(step_size, "step_size")
    _grid(levels)
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}")
    generator = metric.generator if generator is None else generator
    samples = samples_per_step if metric.is_stochastic else 1
    radius = epsilon * math.sqrt(source[0].numel())

    noise = torch.randn(source.shape, generator=generator).to(source.device)
    x = project_l2_box(source + radius * _unit(noise), source, radius)
    start = x.clone()
    velocity = torch.zeros_like(x)
    trace: list[torch.Tensor] = []
    for step in range(steps):
        value, gradient = _value_and_grad(metric, x, source, samples, generator)
        offset = x - source
        on_sphere = l2_norm(offset) >= radius * (1 - 1e-3)
        outward = _unit(offset)
        radial = torch.clamp(_dot(gradient, outward), min=0) * on_sphere.to(gradient.dtype)
        tangent = gradient - _per_image(radial, gradient) * outward
        negligible = tangent.flatten(1).norm(dim=1) <= 1e-6 * gradient.flatten(1).norm(dim=1)
        tangent = tangent * _per_image((~negligible).to(tangent.dtype), tangent)  # no rounding-noise directions
        velocity = momentum * velocity + _unit(tangent)
        length = _cosine_schedule(step, steps, step_size) * radius
        x = project_l2_box(x + length * _unit(velocity), source, radius)
        trace.append(value)
        if progress is not None:
            progress(step, value)
    if levels is not None:
        x = quantize_within_budget(x, source, radius, levels)
    return AttackResult(x, start, torch.stack(trace))


# -- A1 ------------------------------------------------------------------------------------------------------------
def _chunked_compare(metric: Metric, source: torch.Tensor, candidates: torch.Tensor, samples: int, batch: int,
                     generator: torch.Generator | None) -> torch.Tensor:
    """``[M, N]`` mean over ``samples`` shared ensemble samples of ``d(candidate_m, source)``, ``batch`` at a time."""
    if not metric.is_stochastic:
        samples = 1
    total = torch.zeros(candidates.shape[:2], dtype=torch.float64, device=source.device)
    done = 0
    with torch.no_grad():
        while done < samples:
            take = min(batch, samples - done)
            total += metric.compare_samples(source, candidates, take, generator).double().sum(dim=0)
            done += take
    return total / samples


def _pull_back(metric: Metric, source: torch.Tensor, anchor: torch.Tensor, x: torch.Tensor, samples: int,
               points: int, batch: int, generator: torch.Generator | None, levels: int | None) -> torch.Tensor:
    """``s + beta (x - s)`` ``[N, 3, H, W]`` for the largest ``beta`` (coarse grid, then a fine grid) whose distance
    to ``s`` is at most ``d(a, s)``, both measured under the same samples (candidates rounded toward ``s`` onto
    ``k / levels`` first when ``levels`` is given). ``beta = 0`` (the source itself) always qualifies."""
    best = torch.zeros(source.shape[0], dtype=torch.float64, device=source.device)
    chosen = source.clone()
    low, width = torch.zeros_like(best), torch.ones_like(best)
    for _ in range(2):  # coarse grid over (0, 1], then a fine grid over (best, best + 1/points]
        fractions = torch.arange(1, points + 1, dtype=torch.float64, device=source.device) / points
        betas = (low[None, :] + fractions[:, None] * width[None, :]).clamp(max=1)  # [points, N]
        stack = (source[None] + betas[..., None, None, None].float() * (x - source)[None]).clamp(0, 1)
        if levels is not None:
            stack = torch.stack([quantize_toward(candidate, source, levels) for candidate in stack])
        distances = _chunked_compare(metric, source, torch.cat([anchor[None], stack]), samples, batch, generator)
        feasible = (distances[1:] <= distances[:1]) & (betas > best[None, :])  # [points, N]
        for image in range(source.shape[0]):
            rows = torch.nonzero(feasible[:, image]).flatten()
            if len(rows):
                best[image] = betas[rows[-1], image]
                chosen[image] = stack[rows[-1], image]
        low, width = best.clone(), width / points
    return chosen


def attack_a1(
    metric: Metric,
    source: torch.Tensor,
    target: torch.Tensor,
    anchor: torch.Tensor,
    steps: int = 200,
    samples_per_step: int = 8,
    step_size: float = 0.05,
    threshold_samples: int = 64,
    check_samples: int = 64,
    line_search_points: int = 8,
    batch: int = 4,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
    levels: int | None = None,
) -> AttackResult:
    """A1: move ``x`` from ``s`` as close (L2) to ``t`` as possible while ``d(x, s) <= d(a, s)``.

    Constrained descent on ``||x - t||``: each step moves toward ``t`` by up to ``step_size * ||t - s||``
    (cosine decayed), then projects that move onto the linearised constraint
    ``d(x) + <move, grad d> <= 0.99 * threshold`` (which also pulls ``x`` back when it is over the threshold).
    Values and gradients average ``samples_per_step`` ensemble samples (EOT).
    Finally the result is pulled back along the segment from ``s`` to the largest fraction whose distance is at
    most the anchor's, both measured with ``check_samples`` samples shared between them.

    Args:
        metric: the metric to attack.
        source, target, anchor: ``[N, 3, H, W]`` in ``[0, 1]``, equal shapes.
        steps: descent steps (``>= 1``).
        samples_per_step: ensemble samples per gradient (E-LPIPS; ``>= 1``).
        step_size: initial move toward the target per step, as a fraction of ``||t - s||`` (``> 0``).
        threshold_samples: samples of the attacker's estimate of ``d(a, s)`` (E-LPIPS).
        check_samples: samples of the final shared-sample pull-back (E-LPIPS).
        line_search_points: grid points per level of the pull-back (two levels).
        batch: ensemble samples evaluated at once in the threshold estimate and the pull-back.
        generator: CPU generator for the ensemble samples (default: the metric's).
        progress: called after each step.
        levels: pull-back candidates are rounded toward ``s`` onto ``k / levels`` (255: exactly what an 8-bit
            file holds), so the constraint is checked on the values that will be saved; ``None``: float values.

    Returns:
        :class:`AttackResult`; ``threshold`` ``[N]`` is the attacker's estimate of ``d(a, s)``.
    """
    source, target, anchor = _checked(metric, source=source, target=target, anchor=anchor)
    for count, name in ((steps, "steps"), (samples_per_step, "samples_per_step"),
                        (threshold_samples, "threshold_samples"), (check_samples, "check_samples"),
                        (line_search_points, "line_search_points"), (batch, "batch")):
        check_positive_int(count, name)
    _check_positive_float(step_size, "step_size")
    _grid(levels)
    generator = metric.generator if generator is None else generator
    samples = samples_per_step if metric.is_stochastic else 1
    threshold = _chunked_compare(metric, source, anchor[None], threshold_samples, batch, generator)[0].float()
    span = l2_norm(target - source).float()
    margin = 0.01  # aim 1% inside the threshold; the pull-back enforces the threshold itself

    x = source.clone()
    trace: list[torch.Tensor] = []
    for step in range(steps):
        value, gradient = _value_and_grad(metric, x, source, samples, generator)
        length = _cosine_schedule(step, steps, step_size) * span
        pull = target - x
        pull_norm = pull.flatten(1).norm(dim=1)
        move = pull * _per_image(torch.clamp(length / pull_norm.clamp(min=1e-12), max=1.0), pull)
        # project the move onto the linearised constraint  value + <move, grad> <= (1 - margin) * threshold
        gradient_sq = gradient.flatten(1).square().sum(dim=1)
        excess = torch.clamp(value + _dot(move, gradient) - (1 - margin) * threshold, min=0)
        correction = torch.where(gradient_sq > 0, excess / gradient_sq.clamp(min=1e-30),
                                 torch.zeros_like(excess))
        correction_norm = correction * gradient_sq.sqrt()
        cap = step_size * span  # a noisy, tiny gradient must not throw x across the image
        correction = torch.where(correction_norm > cap, correction * cap / correction_norm.clamp(min=1e-30),
                                 correction)
        x = (x + move - _per_image(correction, x) * gradient).clamp(0, 1)
        trace.append(value)
        if progress is not None:
            progress(step, value)
    x = _pull_back(metric, source, anchor, x, check_samples, line_search_points, batch, generator, levels)
    return AttackResult(x, source.clone(), torch.stack(trace), threshold)


# -- evaluation with fresh samples ----------------------------------------------------------------------------------
class _ReportRows:
    """``row(i)``: image ``i`` of a report whose fields are ``[N]`` tensors (and an int sample count)."""

    def row(self, index: int = 0) -> dict[str, float | int]:
        """Image ``index`` as a JSON-ready dict."""
        return {name: (value if isinstance(value, int) else float(value[index]))
                for name, value in vars(self).items()}


@dataclass
class A1Report(_ReportRows):
    """Fresh many-sample evaluation of an A1 result; every field ``[N]`` (float64).

    Attributes:
        distance, half_width: ``d(x, s)`` and its 95% half-width.
        anchor_distance, anchor_half_width: ``d(a, s)`` under the same samples.
        margin, margin_half_width: paired ``d(x, s) - d(a, s)`` (``<= 0`` within its half-width: success).
        relative_pull: ``||x - s|| / ||t - s||``, how far the attack pulled toward the target (0..1 typical).
        relative_remaining: ``||x - t|| / ||t - s||`` (``< 1``: closer to the target than the source is).
        rms_change: ``RMS(x - s)``.
        samples: ensemble samples used (1 for deterministic metrics).
    """

    distance: torch.Tensor
    half_width: torch.Tensor
    anchor_distance: torch.Tensor
    anchor_half_width: torch.Tensor
    margin: torch.Tensor
    margin_half_width: torch.Tensor
    relative_pull: torch.Tensor
    relative_remaining: torch.Tensor
    rms_change: torch.Tensor
    samples: int


@dataclass
class A2Report(_ReportRows):
    """Fresh many-sample evaluation of an A2 result; every field ``[N]`` (float64).

    Attributes:
        distance, half_width: ``d(x, s)`` and its 95% half-width.
        start_distance, start_half_width: ``d(x0, s)`` of the reference point (random start of equal budget).
        gain, gain_half_width: paired ``d(x, s) - d(x0, s)``.
        rms_change, l2_change: ``RMS(x - s)`` and ``||x - s||_2``.
        samples: ensemble samples used (1 for deterministic metrics).
    """

    distance: torch.Tensor
    half_width: torch.Tensor
    start_distance: torch.Tensor
    start_half_width: torch.Tensor
    gain: torch.Tensor
    gain_half_width: torch.Tensor
    rms_change: torch.Tensor
    l2_change: torch.Tensor
    samples: int


def _paired_estimate(metric: Metric, source: torch.Tensor, first: torch.Tensor, second: torch.Tensor,
                     generator: torch.Generator, abs_tol: float, rel_tol: float, max_samples: int,
                     batch: int) -> tuple[Estimate, Estimate]:
    """Estimates of ``d(first, s)`` and ``d(second, s)`` (``[2, N]``) and of their paired difference ``[N]``."""
    if not isinstance(generator, torch.Generator):
        raise ValueError("evaluation needs its own torch.Generator, separate from the attacker's")
    estimate = metric.estimate_compare(source, [first, second], abs_tol, rel_tol, max_samples, batch, generator)
    draws = estimate.draws
    if draws is None:  # estimate_compare keeps its draws
        raise RuntimeError("the paired estimate kept no draws")
    return estimate, summarize(draws[:, 0] - draws[:, 1])


def evaluate_a1(metric: Metric, source: torch.Tensor, target: torch.Tensor, anchor: torch.Tensor,
                attacked: torch.Tensor, generator: torch.Generator, abs_tol: float = 0.01, rel_tol: float = 0.025,
                max_samples: int = 2000, batch: int = 10) -> A1Report:
    """Evaluate an A1 result with fresh samples from ``generator`` (not the attacker's).

    ``d(x, s)`` and ``d(a, s)`` share every sample; sampling stops by the reference's rule (95% half-width below
    ``abs_tol`` and ``rel_tol * mean``) or at ``max_samples``. Inputs ``[N, 3, H, W]`` in ``[0, 1]``.
    """
    source, target, anchor, attacked = _checked(metric, source=source, target=target, anchor=anchor,
                                                attacked=attacked)
    estimate, margin = _paired_estimate(metric, source, attacked, anchor, generator, abs_tol, rel_tol,
                                        max_samples, batch)
    span = l2_norm(target - source)
    safe_span = torch.where(span > 0, span, torch.ones_like(span))
    return A1Report(
        distance=estimate.mean[0], half_width=estimate.half_width[0],
        anchor_distance=estimate.mean[1], anchor_half_width=estimate.half_width[1],
        margin=margin.mean, margin_half_width=margin.half_width,
        relative_pull=l2_norm(attacked - source) / safe_span,
        relative_remaining=l2_norm(attacked - target) / safe_span,
        rms_change=rms(attacked - source), samples=estimate.samples,
    )


def evaluate_a2(metric: Metric, source: torch.Tensor, attacked: torch.Tensor, start: torch.Tensor,
                generator: torch.Generator, abs_tol: float = 0.01, rel_tol: float = 0.025, max_samples: int = 2000,
                batch: int = 10) -> A2Report:
    """Evaluate an A2 result against its starting point with fresh samples from ``generator``.

    ``d(x, s)`` and ``d(x0, s)`` share every sample (paired gain). Inputs ``[N, 3, H, W]`` in ``[0, 1]``.
    """
    source, attacked, start = _checked(metric, source=source, attacked=attacked, start=start)
    estimate, gain = _paired_estimate(metric, source, attacked, start, generator, abs_tol, rel_tol, max_samples,
                                      batch)
    return A2Report(
        distance=estimate.mean[0], half_width=estimate.half_width[0],
        start_distance=estimate.mean[1], start_half_width=estimate.half_width[1],
        gain=gain.mean, gain_half_width=gain.half_width,
        rms_change=rms(attacked - source), l2_change=l2_norm(attacked - source), samples=estimate.samples,
    )


def mean_pairwise_distance(metric: Metric, images: torch.Tensor, samples: int = 16, max_pairs: int | None = None,
                           generator: torch.Generator | None = None,
                           batch: int = 8) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Distances between distinct images of a set: A2's normaliser (1 = mean distance between different images).

    Args:
        images: ``[K, 3, H, W]`` in ``[0, 1]``, ``K >= 2``.
        samples: ensemble samples per pair (E-LPIPS).
        max_pairs: use a random subset of this many of the ``K (K - 1) / 2`` pairs (``None``: all).
        generator: CPU generator for the pair subset and the samples (use the evaluation's, not the attacker's).
        batch: pairs evaluated at once.

    Returns:
        ``([P] float64 distances, the P index pairs (i, j), i < j)``; the normaliser is their mean.
    """
    (images,) = _checked(metric, images=images)
    if images.shape[0] < 2:
        raise ValueError(f"the normalising set needs at least 2 images, got {images.shape[0]}")
    check_positive_int(samples, "samples")
    check_positive_int(batch, "batch")
    generator = metric.generator if generator is None else generator
    pairs = [(i, j) for i in range(images.shape[0]) for j in range(i + 1, images.shape[0])]
    if max_pairs is not None:
        check_positive_int(max_pairs, "max_pairs")
        if max_pairs < len(pairs):
            order = torch.randperm(len(pairs), generator=generator)[:max_pairs].sort().values
            pairs = [pairs[k] for k in order.tolist()]
    samples = samples if metric.is_stochastic else 1
    chunks = []
    with torch.no_grad():
        for begin in range(0, len(pairs), batch):
            chunk = pairs[begin:begin + batch]
            first = images[[i for i, _ in chunk]]
            second = images[[j for _, j in chunk]]
            chunks.append(metric.sample_distances(first, second, samples, generator).double().mean(dim=0))
    return torch.cat(chunks), pairs
