"""VGG16 convolution stack (torchvision layout) with E-LPIPS and LPIPS feature taps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import DropoutHook, StagedBackbone, conv_relu

# torchvision's VGG16 "features" configuration: channel counts, "M" = pooling.
_VGG16_CONFIG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
LPIPS_TAP_CONVS = (1, 3, 6, 9, 12)
"""Zero-based convolution numbers after which LPIPS taps: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."""


class VGG16Features(StagedBackbone):
    """VGG16 ``features`` (all 13 convolutions; the last pooling layer is never needed).

    Parameter names match torchvision (``features.0.weight`` ...), so a torchvision state dict loads directly.

    Args:
        pooling: ``"avg"`` (E-LPIPS: every max-pool replaced by a 2x2 average pool) or ``"max"`` (LPIPS).
        taps: ``"elpips"`` (the input itself and the ReLU output of every convolution: 14 taps) or ``"lpips"``
            (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
    """

    def __init__(self, pooling: str = "avg", taps: str = "elpips") -> None:
        super().__init__()
        if pooling not in ("avg", "max"):
            raise ValueError(f"pooling must be 'avg' or 'max', got {pooling!r}")
        if taps not in ("elpips", "lpips"):
            raise ValueError(f"taps must be 'elpips' or 'lpips', got {taps!r}")
        self.pooling = pooling
        self.taps = taps
        layers: list[nn.Module] = []
        in_channels = 3
        for item in _VGG16_CONFIG:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2) if pooling == "max" else nn.AvgPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_channels, int(item), 3, padding=1), nn.ReLU(inplace=False)]
                in_channels = int(item)
        self.features = nn.Sequential(*layers)
        self._stages, self._conv_numbers = self._stage_plan()

    @property
    def tap_channels(self) -> list[int]:
        convs = [m.out_channels for m in self.features if isinstance(m, nn.Conv2d)]
        if self.taps == "elpips":
            return [3, *convs]
        return [convs[i] for i in LPIPS_TAP_CONVS]

    def _stage_plan(self) -> tuple[list[list[int]], dict[int, int]]:
        """Indices into ``features`` that each stage runs (ReLUs are fused into their convolution), and the
        convolution number of every convolution index."""
        stages: list[list[int]] = [[]] if self.taps == "elpips" else []  # E-LPIPS: the input is tap 0
        conv_numbers: dict[int, int] = {}
        current: list[int] = []
        for index, layer in enumerate(self.features):
            if isinstance(layer, nn.ReLU):
                continue
            current.append(index)
            if isinstance(layer, nn.Conv2d):
                conv_numbers[index] = len(conv_numbers)
                if self.taps == "elpips" or conv_numbers[index] in LPIPS_TAP_CONVS:
                    stages.append(current)
                    current = []
        return stages, conv_numbers

    def run_layer(self, index: int, x: torch.Tensor, dropout: DropoutHook | None) -> torch.Tensor:
        layer = self.features[index]
        if isinstance(layer, nn.Conv2d):
            return conv_relu(layer, x, dropout, self._conv_numbers[index])
        if isinstance(layer, nn.MaxPool2d):
            return F.max_pool2d(x, 2, 2)
        return F.avg_pool2d(x, 2, 2)
