"""Drop-in replacements for the LPIPS modules of other libraries, thin layers over :class:`elpips.Metric`.

* :class:`LPIPS` is built and called like ``lpips.LPIPS``: ``LPIPS(net="vgg")(x, y)`` with inputs in ``[-1, 1]``
  (``normalize=True``: ``[0, 1]``) returns ``[N, 1, 1, 1]``. ``ensemble=True`` (default) is E-LPIPS,
  ``ensemble=False`` LPIPS v0.1 (equal to ``lpips.LPIPS`` on the same weights).
* ``LearnedPerceptualImagePatchSimilarity`` is built and used like torchmetrics' class of that name
  (``update(preds, target)``, ``compute()``, ``reduction="mean" | "sum"``, its state synchronised across
  processes); importable only when ``torchmetrics`` is installed (``pip install elpips[torchmetrics]``).

Both choose their metric from ``net`` and ``ensemble``, or take any named metric as ``metric=``; every other
keyword (``backbone_weights``, ``linear_weights``, ``seed``, ``n`` ...) is :class:`elpips.Metric`'s.
docs/adapters.md shows the one-line migrations.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from .metric import Metric

NETS = ("vgg", "squeeze", "alex")
"""The ``net`` names of ``lpips.LPIPS`` (torchmetrics' ``net_type``)."""


def metric_name(net: str | None, ensemble: bool, metric: str | None, net_argument: str = "net") -> str:
    """The named metric for ``net`` (``None``: ``"vgg"``) with or without the ensemble, or ``metric`` itself.

    ``ValueError`` naming the arguments for an unknown net, for ``metric`` together with ``net``, and for
    ``net="alex"`` with the ensemble (there are no E-LPIPS weights for AlexNet).
    """
    if metric is not None:
        if net is not None:
            raise ValueError(f"pass either metric= or {net_argument}=, not both (metric={metric!r}, "
                             f"{net_argument}={net!r})")
        return metric
    net = "vgg" if net is None else net
    if net not in NETS:
        raise ValueError(f"{net_argument} must be one of {', '.join(NETS)}; got {net!r}")
    if net == "alex" and ensemble:
        raise ValueError(f"{net_argument}='alex' has no E-LPIPS variant (there are no E-LPIPS weights for "
                         f"AlexNet): pass ensemble=False for LPIPS-Alex, or {net_argument}='vgg' for E-LPIPS")
    return f"{'elpips' if ensemble else 'lpips'}-{net}"


def to_unit_range(images: torch.Tensor, normalize: bool, name: str) -> torch.Tensor:
    """``[-1, 1]`` images (``normalize=True``: ``[0, 1]``, kept) -> ``[0, 1]``; ``ValueError`` naming ``name``
    and ``normalize`` for values out of range."""
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise ValueError(f"{name} must be a floating-point torch.Tensor")
    low = 0.0 if normalize else -1.0
    with torch.no_grad():
        out_of_range = images.numel() > 0 and bool((images.amin() < low) | (images.amax() > 1.0))
    if out_of_range:
        expected = "[0, 1] (normalize=True)" if normalize else "[-1, 1] (or [0, 1] with normalize=True)"
        raise ValueError(f"{name} must hold values in {expected}; got [{images.amin().item():.4g}, "
                         f"{images.amax().item():.4g}]")
    return images if normalize else (images + 1) / 2


class LPIPS(nn.Module):
    """``lpips.LPIPS``, E-LPIPS inside: ``loss_fn = elpips.adapters.LPIPS(net="vgg")`` then
    ``loss_fn(x, y)`` with ``x, y`` ``[N, 3, H, W]`` in ``[-1, 1]`` -> ``[N, 1, 1, 1]``.

    Args:
        net: ``"vgg"`` (default), ``"squeeze"`` or ``"alex"`` (LPIPS only: ``ensemble=False``).
        ensemble: ``True``: E-LPIPS (random transformations and dropout, a new ensemble sample every call);
            ``False``: LPIPS v0.1, equal to ``lpips.LPIPS(net=net)`` on the same weights.
        metric: any name of :data:`elpips.METRIC_NAMES` instead of ``net`` and ``ensemble``.
        n: ensemble samples averaged per call (1 is the practice for a training loss; ignored by LPIPS).
        pretrained, version, lpips, pnet_rand, verbose: ``lpips.LPIPS``'s, accepted where they mean the same:
            ``pnet_rand=True`` is ``backbone_weights="random"``; ``pretrained=False``, ``lpips=False``,
            another ``version`` have no E-LPIPS counterpart (``ValueError``).
        backbone_weights: ``"imagenet"`` (default), ``"random"``, ``"random:SEED"`` or a file (``elpips.Metric``).
        device: where the module starts (default ``"cpu"``, as ``lpips.LPIPS``; move it with ``.to(device)``).
        **options: the other keywords of :class:`elpips.Metric` (``linear_weights``, ``seed``, ``memory_budget``...).

    The network is frozen (``parameters()`` is empty); gradients flow to the inputs. ``retPerLayer=True`` is not
    supported.
    """

    def __init__(self, net: str | None = None, ensemble: bool = True, *, metric: str | None = None, n: int = 1,
                 pretrained: bool = True, version: str = "0.1", lpips: bool = True, pnet_rand: bool = False,
                 verbose: bool = False, backbone_weights: str | os.PathLike | None = None,
                 device: str | torch.device | None = "cpu", **options: Any) -> None:
        super().__init__()
        if not pretrained or not lpips or version != "0.1":
            raise ValueError("pretrained=False, lpips=False and version other than '0.1' have no E-LPIPS "
                             "counterpart; pass linear_weights=PATH for other linear weights")
        if pnet_rand and backbone_weights is not None:
            raise ValueError("pass either pnet_rand=True or backbone_weights=, not both")
        backbone_weights = "random" if pnet_rand else ("imagenet" if backbone_weights is None else backbone_weights)
        self.n = n
        self.metric = Metric(metric_name(net, ensemble, metric), backbone_weights=backbone_weights, device=device,
                             **options)
        if verbose:
            print(f"Loaded {self.metric.name} ({self.metric.weights_info.description})")

    def forward(self, in0: torch.Tensor, in1: torch.Tensor, retPerLayer: bool = False,  # noqa: N803 (lpips')
                normalize: bool = False) -> torch.Tensor:
        """Distance between image ``i`` of ``in0`` and of ``in1``, ``[N, 1, 1, 1]``; inputs in ``[-1, 1]``, or in
        ``[0, 1]`` with ``normalize=True``."""
        if retPerLayer:
            raise ValueError("retPerLayer=True is not supported: use elpips.Metric.features for the taps")
        x = to_unit_range(in0, normalize, "in0")
        y = to_unit_range(in1, normalize, "in1")
        return self.metric(x, y, self.n, reduction="none").view(-1, 1, 1, 1)


def _torchmetrics_class() -> type:
    """``LearnedPerceptualImagePatchSimilarity``, defined on first use (it subclasses ``torchmetrics.Metric``)."""
    try:
        import torchmetrics
    except ImportError:
        raise ImportError("elpips.adapters.LearnedPerceptualImagePatchSimilarity needs torchmetrics: "
                          "pip install elpips[torchmetrics]") from None

    class LearnedPerceptualImagePatchSimilarity(torchmetrics.Metric):
        """torchmetrics' ``LearnedPerceptualImagePatchSimilarity``, E-LPIPS inside.

        Args:
            net_type: ``"vgg"`` (default), ``"squeeze"`` or ``"alex"`` (LPIPS only: ``ensemble=False``).
            reduction: ``"mean"`` (default) or ``"sum"`` of every distance seen since the last ``reset()``.
            normalize: ``False``: inputs in ``[-1, 1]``; ``True``: in ``[0, 1]``.
            ensemble: E-LPIPS (``True``) or LPIPS v0.1 (``False``, torchmetrics' numbers on the same weights).
            metric: any name of :data:`elpips.METRIC_NAMES` instead of ``net_type`` and ``ensemble``.
            n: ensemble samples per image pair.
            backbone_weights, linear_weights, seed, ...: :class:`elpips.Metric`'s (``metric_options``).
            **kwargs: ``torchmetrics.Metric``'s (``sync_on_compute``, ``process_group``, ``dist_sync_fn`` ...).

        The state (the sum of the distances and their count) is summed over processes in ``compute()``. Give
        each rank its own ``seed`` for independent ensemble samples.
        """

        is_differentiable = True
        higher_is_better = False
        full_state_update = False
        sum_scores: torch.Tensor  # states, registered by add_state
        total: torch.Tensor
        plot_lower_bound = 0.0

        def __init__(self, net_type: str | None = None, reduction: str = "mean", normalize: bool = False, *,
                     ensemble: bool = True, metric: str | None = None, n: int = 1,
                     backbone_weights: str | os.PathLike = "imagenet", linear_weights: str | os.PathLike | None = None,
                     seed: int | None = None, metric_options: dict[str, Any] | None = None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            if reduction not in ("mean", "sum"):
                raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
            if not isinstance(normalize, bool):
                raise ValueError(f"normalize must be a bool, got {normalize!r}")
            self.reduction = reduction
            self.normalize = normalize
            self.n = n
            self.net = Metric(metric_name(net_type, ensemble, metric, "net_type"), backbone_weights=backbone_weights,
                              linear_weights=linear_weights, seed=seed, device="cpu", **(metric_options or {}))
            self.add_state("sum_scores", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state("total", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

        def update(self, img1: torch.Tensor, img2: torch.Tensor) -> None:
            """Add the distances of the pairs ``(img1[i], img2[i])``."""
            x = to_unit_range(img1, self.normalize, "img1")
            y = to_unit_range(img2, self.normalize, "img2")
            distances = self.net(x, y, self.n, reduction="none")
            self.sum_scores = self.sum_scores + distances.sum().to(self.sum_scores.dtype)
            self.total = self.total + distances.numel()

        def compute(self) -> torch.Tensor:
            """The mean (or sum) of every distance since the last reset, over all processes."""
            if self.reduction == "sum":
                return self.sum_scores.float()
            return (self.sum_scores / self.total).float()

    LearnedPerceptualImagePatchSimilarity.__module__ = __name__
    LearnedPerceptualImagePatchSimilarity.__qualname__ = "LearnedPerceptualImagePatchSimilarity"
    return LearnedPerceptualImagePatchSimilarity


_LAZY: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    if name == "LearnedPerceptualImagePatchSimilarity":
        if name not in _LAZY:
            _LAZY[name] = _torchmetrics_class()
        return _LAZY[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LPIPS", "NETS", "metric_name"]  # and LearnedPerceptualImagePatchSimilarity, with torchmetrics
