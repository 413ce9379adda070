"""E-LPIPS: robust perceptual image distance (Kettunen, Härkönen & Lehtinen, 2019), on PyTorch.

    >>> import elpips
    >>> metric = elpips.Metric("elpips-vgg")          # ImageNet VGG16 weights (torchvision cache / download)
    >>> d = metric(x, y, n=8)                          # x, y: float [N, 3, H, W] in [0, 1] -> [N]
"""

from . import spatial  # elpips.spatial.distance_map / compare_maps
from .configs import CONFIGS, LADDER, METRIC_NAMES, MetricConfig, get_config
from .devices import resolve_device
from .ensemble import EnsembleConfig
from .estimate import Estimate
from .metric import EnsembleSample, Features, Metric
from .transforms import TransformRecord, apply_transform, default_scale_levels, sample_transform
from .validation import check_images
from .weights import WeightsInfo, WeightsUnavailableError

__version__ = "0.1.0"

__all__ = [
    "spatial",
    "CONFIGS",
    "EnsembleConfig",
    "LADDER",
    "METRIC_NAMES",
    "EnsembleSample",
    "Estimate",
    "Features",
    "Metric",
    "MetricConfig",
    "TransformRecord",
    "WeightsInfo",
    "WeightsUnavailableError",
    "apply_transform",
    "check_images",
    "default_scale_levels",
    "get_config",
    "resolve_device",
    "sample_transform",
]
