"""The ensemble ablation (the paper's Figure 3): attack A1 against each rung of a ladder of metrics.

Every rung is attacked with the same budget and settings and the same attacker seed; every result is then
evaluated with fresh samples (generators separate from the attacker's) under the full E-LPIPS and under the
rung's own metric. The success measure is how far the attack pulled the source toward the target,
``||x - s|| / ||t - s||``, while keeping ``d(x, s) <= d(a, s)`` under the attacked metric.

Takes and returns tensors; no I/O (the command line writes the figure, JSON and table).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..metric import Metric
from .robustness import A1Report, Progress, attack_a1, evaluate_a1


@dataclass(frozen=True)
class AblationSettings:
    """The attack budget and evaluation settings shared by every rung (see
    :func:`elpips.experiments.robustness.attack_a1`).

    Attributes:
        steps, samples_per_step, step_size: the attack's budget.
        check_samples: samples of the attacker's threshold estimate ``d(a, s)`` and of its final pull-back.
        seed: the attacker's generator seed (every rung starts from the same seed); evaluations use
            ``seed + 1`` (own rung) and ``seed + 2`` (full E-LPIPS).
        eval_max_samples: cap on the fresh samples of each evaluation (it stops earlier by the reference's rule).
        levels: round the attacked images onto ``k / levels`` (255: what an 8-bit file holds); ``None``: floats.
    """

    steps: int = 200
    samples_per_step: int = 8
    step_size: float = 0.05
    seed: int = 0
    check_samples: int = 64
    eval_max_samples: int = 2000
    levels: int | None = 255


@dataclass
class RungResult:
    """One rung's attacked image and its two fresh-sample evaluations.

    Attributes:
        name: the rung's metric name.
        attacked: ``[N, 3, H, W]`` in ``[0, 1]``.
        own: evaluation under the rung's own metric (the constraint it was attacked under).
        full: evaluation under the full E-LPIPS (the same metric for the last rung, with other samples).
        attacker_threshold: ``[N]`` the attacker's estimate of ``d(a, s)`` under the rung.
    """

    name: str
    attacked: torch.Tensor
    own: A1Report
    full: A1Report
    attacker_threshold: torch.Tensor = field(repr=False)


def attack_rung(metric: Metric, full: Metric, source: torch.Tensor, target: torch.Tensor, anchor: torch.Tensor,
                settings: AblationSettings = AblationSettings(), progress: Progress | None = None) -> RungResult:
    """Attack A1 against ``metric`` and evaluate the result under ``metric`` and under ``full`` (fresh samples).

    Args:
        metric: the rung to attack.
        full: the full E-LPIPS metric every result is also evaluated under.
        source, target, anchor: ``[N, 3, H, W]`` in ``[0, 1]``, equal shapes.
        settings: budget and seeds (the same for every rung of one experiment).
        progress: called after every attack step.
    """
    attack = attack_a1(metric, source, target, anchor, steps=settings.steps,
                       samples_per_step=settings.samples_per_step, step_size=settings.step_size,
                       threshold_samples=settings.check_samples, check_samples=settings.check_samples,
                       generator=torch.Generator().manual_seed(settings.seed), progress=progress,
                       levels=settings.levels)
    attacked = attack.images
    own = evaluate_a1(metric, source, target, anchor, attacked, torch.Generator().manual_seed(settings.seed + 1),
                      max_samples=settings.eval_max_samples)
    under_full = evaluate_a1(full, source, target, anchor, attacked, torch.Generator().manual_seed(settings.seed + 2),
                             max_samples=settings.eval_max_samples)
    if attack.threshold is None:  # an A1 attack always reports the threshold it kept
        raise RuntimeError("attack A1 returned no threshold")
    return RungResult(metric.name, attacked, own, under_full, attack.threshold)

