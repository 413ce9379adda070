"""The metric configurations: which backbone, pooling, taps, linear weights, ensemble and dropout."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricConfig:
    """Everything that defines one named metric.

    Attributes:
        name: registry name, e.g. ``"elpips-vgg"``.
        backbone: ``"vgg16"``, ``"squeezenet1_1"`` or ``"none"`` (plain L2).
        ensemble: random input transformations (E-LPIPS) on or off (LPIPS).
        dropout: dropout before every convolution (E-LPIPS only).
        linear_weights: packaged E-LPIPS weights name, ``"lpips:<net>"`` for the ``lpips`` package's v0.1 files.
        min_size: smallest image side (pixels) the network accepts with this config.
    """

    name: str
    backbone: str
    ensemble: bool
    dropout: bool
    linear_weights: str
    min_size: int
    description: str

    @property
    def is_elpips(self) -> bool:
        return self.ensemble


CONFIGS: dict[str, MetricConfig] = {
    config.name: config
    for config in (
        MetricConfig("elpips-vgg", "vgg16", True, True, "elpips_vgg", 16,
                     "E-LPIPS on VGG16 (average pooling, 14 taps)"),
        MetricConfig("elpips-squeeze", "squeezenet1_1", True, True, "elpips_squeeze", 24,
                     "E-LPIPS on SqueezeNet 1.1 (experimental in the reference, 10 taps)"),
        MetricConfig("lpips-vgg", "vgg16", False, False, "lpips:vgg", 16, "LPIPS v0.1 on VGG16"),
        MetricConfig("lpips-squeeze", "squeezenet1_1", False, False, "lpips:squeeze", 17,
                     "LPIPS v0.1 on SqueezeNet 1.1"),
        MetricConfig("l2", "none", False, False, "none", 1,
                     "root-mean-square pixel difference (for checking solvers against closed forms)"),
    )
}

METRIC_NAMES: tuple[str, ...] = tuple(CONFIGS)


def get_config(name: str) -> MetricConfig:
    """The :class:`MetricConfig` called ``name``; ``ValueError`` listing the valid names otherwise."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; choose one of: {', '.join(METRIC_NAMES)}") from None
