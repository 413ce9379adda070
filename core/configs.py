"""The metric configurations: which backbone, network variant, taps, linear weights and ensemble.

Besides the four metrics of the reference (and ``l2``), the registry holds the rungs of the paper's ablation
ladder (its Figure 3: attack A1 against increasingly rich ensembles), each adding one piece to the one before:

``lpips-vgg`` -> ``elpips-vgg+all-layers`` -> ``elpips-vgg+geom`` -> ``elpips-vgg+color`` ->
``elpips-vgg+scaling`` -> ``elpips-vgg+dropout`` (= ``elpips-vgg``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .ensemble import EnsembleConfig


@dataclass(frozen=True)
class MetricConfig:
    """Everything that defines one named metric.

    Attributes:
        name: registry name, e.g. ``"elpips-vgg"``.
        backbone: ``"vgg16"``, ``"squeezenet1_1"``, ``"alexnet"`` (LPIPS only) or ``"none"`` (plain L2).
        network: ``"elpips"`` (VGG: average pooling and all 14 taps; SqueezeNet: floor pooling and 10 taps),
            ``"lpips"`` (the LPIPS v0.1 network: max/ceil pooling, LPIPS taps) or ``"none"``.
        ensemble: the random transformations and dropout (:class:`EnsembleConfig`; all off for LPIPS and L2).
        linear_weights: packaged E-LPIPS weights name, ``"lpips:<net>"`` for the ``lpips`` package's v0.1 files.
        min_size: smallest image side (pixels) the network accepts with this config.
        description: what the metric is (shown in ``--help``).
    """

    name: str
    backbone: str
    network: str
    ensemble: EnsembleConfig
    linear_weights: str
    min_size: int
    description: str

    @property
    def is_elpips(self) -> bool:
        """Whether the network is the E-LPIPS one (average pooling, all taps), whatever the ensemble."""
        return self.network == "elpips"


FULL = EnsembleConfig()
NONE = EnsembleConfig.none()

LADDER: tuple[str, ...] = ("lpips-vgg", "elpips-vgg+all-layers", "elpips-vgg+geom", "elpips-vgg+color",
                           "elpips-vgg+scaling", "elpips-vgg+dropout")
"""The ablation ladder, from LPIPS-VGG to the full E-LPIPS-VGG; every rung adds one piece to the one before."""

LADDER_LABELS: dict[str, str] = {
    "lpips-vgg": "LPIPS-VGG",
    "elpips-vgg+all-layers": "+all layers",
    "elpips-vgg+geom": "+geom.",
    "elpips-vgg+color": "+color",
    "elpips-vgg+scaling": "+scaling",
    "elpips-vgg+dropout": "+dropout",
}
"""The paper's panel captions for the rungs."""

_GEOM = NONE.updated(offset=True, flip=True, swap=True)
_COLOR = _GEOM.updated(permutation=True, color=True)
_SCALING = _COLOR.updated(scaling=True)

CONFIGS: dict[str, MetricConfig] = {
    config.name: config
    for config in (
        MetricConfig("elpips-vgg", "vgg16", "elpips", FULL, "elpips_vgg", 16,
                     "E-LPIPS on VGG16 (average pooling, 14 taps)"),
        MetricConfig("elpips-squeeze", "squeezenet1_1", "elpips", FULL, "elpips_squeeze", 24,
                     "E-LPIPS on SqueezeNet 1.1 (experimental in the reference, 10 taps)"),
        MetricConfig("lpips-vgg", "vgg16", "lpips", NONE, "lpips:vgg", 16, "LPIPS v0.1 on VGG16"),
        MetricConfig("lpips-squeeze", "squeezenet1_1", "lpips", NONE, "lpips:squeeze", 17,
                     "LPIPS v0.1 on SqueezeNet 1.1"),
        MetricConfig("lpips-alex", "alexnet", "lpips", NONE, "lpips:alex", 31,
                     "LPIPS v0.1 on AlexNet (what lpips.LPIPS() uses unless told otherwise; no E-LPIPS variant: "
                     "there are no E-LPIPS weights for it)"),
        MetricConfig("l2", "none", "none", NONE, "none", 1,
                     "root-mean-square pixel difference (for checking solvers against closed forms)"),
        MetricConfig("elpips-vgg+all-layers", "vgg16", "elpips", NONE, "elpips_vgg", 16,
                     "ablation rung 2: LPIPS-VGG with the E-LPIPS network (average pooling, all 14 taps, E-LPIPS "
                     "linear weights); no transformations, no dropout (deterministic)"),
        MetricConfig("elpips-vgg+geom", "vgg16", "elpips", _GEOM, "elpips_vgg", 16,
                     "ablation rung 3: +all-layers plus the geometric transformations (offset, flips, x/y swap)"),
        MetricConfig("elpips-vgg+color", "vgg16", "elpips", _COLOR, "elpips_vgg", 16,
                     "ablation rung 4: +geom plus colour permutation and colour scaling"),
        MetricConfig("elpips-vgg+scaling", "vgg16", "elpips", _SCALING, "elpips_vgg", 16,
                     "ablation rung 5: +color plus random downscaling (every transformation, no dropout)"),
        MetricConfig("elpips-vgg+dropout", "vgg16", "elpips", FULL, "elpips_vgg", 16,
                     "ablation rung 6: +scaling plus dropout: the full E-LPIPS-VGG (same as elpips-vgg)"),
    )
}

METRIC_NAMES: tuple[str, ...] = tuple(CONFIGS)


def get_config(name: str) -> MetricConfig:
    """The :class:`MetricConfig` called ``name``; ``ValueError`` listing the valid names otherwise."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; choose one of: {', '.join(METRIC_NAMES)}") from None
