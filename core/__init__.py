"""E-LPIPS: robust perceptual image distance (Kettunen, Härkönen & Lehtinen, 2019), on PyTorch.

    >>> import torch, elpips
    >>> metric = elpips.Metric("elpips-vgg", backbone_weights="random")   # default "imagenet": torchvision's VGG16
    >>> x, y = torch.rand(2, 1, 3, 32, 32)                                  # float [N, 3, H, W] in [0, 1]
    >>> metric(x, y, n=2).shape                                              # mean of 2 ensemble samples
    torch.Size([1])
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
