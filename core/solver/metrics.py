"""The metric a solve runs under. A solve never changes the metric it is given: it does not move it to another
device, re-seed it or draw from its generator; a metric given by name is built on the requested device."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, overload

import torch
from elpips.devices import resolve_device

if TYPE_CHECKING:
    from elpips.metric import Metric


def check_metric_device(metric: Any, device: str | torch.device | None) -> None:
    """A given ``device`` must be the metric's own (a solve never moves a caller's metric)."""
    if device is None or not hasattr(metric, "device"):
        return
    wanted, actual = resolve_device(device), torch.device(metric.device)
    if wanted.type != actual.type or (wanted.index or 0) != (actual.index or 0):
        raise ValueError(f"device {str(device)!r} requested but the metric is on {actual}: move the metric "
                         f"(metric.to(device)) or leave device unset")


@overload
def resolve_metric(metric: str | Metric, device: str | torch.device | None) -> Metric: ...
@overload
def resolve_metric(metric: Any, device: str | torch.device | None) -> Any: ...
def resolve_metric(metric: Any, device: str | torch.device | None) -> Any:
    """The metric of a solve: a name is built (ImageNet weights) on ``device``; a metric object is returned as it
    is, after checking that ``device`` (if given) is its own."""
    if isinstance(metric, str):
        from elpips import Metric

        return Metric(metric, device=device)
    if not callable(metric):
        raise ValueError(f"metric must be an elpips.Metric, a metric name or a distance function, got {metric!r}")
    check_metric_device(metric, device)
    return metric
