"""Argument checks of the everyday calls, shared by :class:`~elpips.Metric` and :mod:`elpips.spatial`: one check,
one message, whichever call receives the argument. Every check raises ``ValueError`` naming the argument."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, SupportsIndex, cast

import torch

from .configs import MetricConfig
from .ensemble import EnsembleConfig
from .memory import MIN_BUDGET
from .transforms import TransformRecord, offset_size, scaled_size
from .validation import check_images, check_same_shape

if TYPE_CHECKING:
    from .metric import Metric

Reduction = Literal["none", "mean", "sum"]
REDUCTIONS: tuple[str, ...] = ("none", "mean", "sum")

SEED_LIMIT = 2**64
"""Seeds are integers in ``0 .. SEED_LIMIT - 1``, the range of a torch generator's 64-bit seed."""


def check_reduction(reduction: str) -> Reduction:
    """``reduction`` itself; ``ValueError`` unless it is one of :data:`REDUCTIONS`."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    return cast(Reduction, reduction)


def reduce(distances: torch.Tensor, reduction: str) -> torch.Tensor:
    """``distances`` ``[N]`` as they are (``"none"``), or their 0-dim ``"mean"`` / ``"sum"``."""
    if reduction == "mean":
        return distances.mean()
    if reduction == "sum":
        return distances.sum()
    return distances


def check_seed(seed: int | None) -> int | None:
    """``seed`` as an int (``None`` kept); ``ValueError`` naming ``seed`` for a non-integer or out-of-range one."""
    if seed is None:
        return None
    try:
        value = None if isinstance(seed, bool) else operator.index(seed)
    except TypeError:
        value = None
    if value is None or not 0 <= value < SEED_LIMIT:
        raise ValueError(f"seed must be an integer in 0 .. 2**64 - 1, got {seed!r}")
    return value


def check_sample_count(n: object) -> None:
    """``n`` (ensemble samples) must be a positive integer."""
    try:
        count = operator.index(cast(SupportsIndex, n))  # ints and NumPy integers; not floats or bools
    except TypeError:
        count = 0
    if isinstance(n, bool) or count < 1:
        raise ValueError(f"n must be a positive integer (the number of ensemble samples), got {n!r}")


def check_memory_budget(memory_budget: int | None) -> int | None:
    """``memory_budget`` itself (``None``: the device's default); ``ValueError`` below :data:`MIN_BUDGET`."""
    if memory_budget is not None and memory_budget < MIN_BUDGET:
        raise ValueError(f"memory_budget must be at least {MIN_BUDGET} bytes, got {memory_budget}")
    return memory_budget


def seeded_generator(seed: int | None) -> torch.Generator:
    """A CPU generator for the ensemble sampling, seeded by ``seed`` (checked: :func:`check_seed`), or
    nondeterministically for ``None``."""
    seed = check_seed(seed)
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def resolve_ensemble(config: MetricConfig, ensemble: EnsembleConfig | None, scale_levels: int | None,
                     dropout_keep: float | None) -> EnsembleConfig:
    """The ensemble a :class:`Metric` runs: ``ensemble`` (default: the named metric's own) with the
    ``scale_levels`` / ``dropout_keep`` shortcuts applied where it has scaling / dropout (ignored where it has
    not, e.g. for LPIPS); ``ValueError`` for impossible values."""
    if ensemble is None:
        ensemble = config.ensemble
    elif not isinstance(ensemble, EnsembleConfig):
        raise ValueError(f"ensemble must be an elpips.EnsembleConfig, got {type(ensemble).__name__}")
    changes = {name: value for name, value in (("scale_levels", scale_levels), ("dropout_keep", dropout_keep))
               if value is not None}
    if changes:
        ensemble = ensemble.updated(strict=False, **changes)
    if config.backbone == "none" and ensemble.is_stochastic:
        raise ValueError(f"{config.name} has no network: it takes no ensemble (got {ensemble.summary()})")
    return ensemble


def check_scaled_size(metric: Metric, height: int, width: int, scale_level: int,
                      ensemble: EnsembleConfig) -> None:
    """``ValueError`` when scale level ``scale_level`` (and, in crop mode, the offset crop) leaves images
    smaller than the network's minimum size."""
    crop = ensemble.crop
    smallest = min(scaled_size(height, width, scale_level, crop, ensemble.tileable))
    if crop:
        smallest = min(offset_size(smallest, smallest, ensemble.padding, crop))
    if smallest < metric.min_size:
        how = f"scale level {scale_level}" + (f" and cropping {ensemble.padding} px" if crop else "")
        raise ValueError(
            f"{how} shrinks {height}x{width} images to {smallest} px, below the "
            f"{metric.min_size} px {metric.name} needs (use fewer scale levels or larger images)"
        )


def check_fixed_transform(metric: Metric, transform: TransformRecord, n: int, height: int, width: int) -> None:
    """A fixed ``transform`` is one sample (``n`` must be 1) and must leave ``height x width`` images at least the
    network's minimum size."""
    if n != 1:
        raise ValueError("a fixed transform is one sample: use n=1")
    check_scaled_size(metric, height, width, transform.scale_level, transform.ensemble)


def input_dtype(metric: Metric, images: torch.Tensor) -> torch.dtype:
    """Network metrics compute in :attr:`Metric.dtype`; ``l2`` keeps float32/float64 inputs as they are."""
    if metric.backbone is None and images.dtype in (torch.float32, torch.float64):
        return images.dtype
    return metric.dtype


def checked_images(metric: Metric, images: torch.Tensor, name: str) -> torch.Tensor:
    """Checked ``[N, 3, H, W]`` inputs on the metric's device and in its precision (float16, bfloat16 and float64
    inputs are converted; gradients flow back in the input's dtype). Under autocast the network still runs in
    the autocast precision."""
    check_images(images, name, metric.min_size)
    return images.to(device=metric.device, dtype=input_dtype(metric, images))


def stack_candidates(metric: Metric, reference: torch.Tensor,
                     candidates: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Checked ``[M, N, 3, H, W]`` from ``M`` candidates ``[N, 3, H, W]`` (a sequence, or one 5-D tensor), each
    of ``reference``'s shape (``reference`` already checked), on the metric's device and in its precision."""
    if isinstance(candidates, torch.Tensor) and candidates.dim() == 5:
        candidates = list(candidates.unbind(0))
    if len(candidates) == 0:
        raise ValueError("compare needs at least one candidate")
    checked = []
    for index, candidate in enumerate(candidates):
        candidate = checked_images(metric, candidate, f"candidate {index}")
        check_same_shape(reference, candidate, "reference", f"candidate {index}")
        checked.append(candidate)
    return torch.stack(checked)
