"""SqueezeNet 1.1 (torchvision layout) with E-LPIPS and LPIPS feature taps."""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.squeezenet import Fire

from .common import DropoutHook, StagedBackbone, conv_relu

_POOL_INDICES = (2, 5, 8)
LPIPS_TAP_LAYERS = (1, 4, 7, 9, 10, 11, 12)
"""torchvision ``features`` indices after which LPIPS taps (relu1 ... relu7, as the ``lpips`` package slices)."""


class SqueezeNetFeatures(StagedBackbone):
    """SqueezeNet 1.1 ``features``.

    Parameter names match torchvision (``features.3.squeeze.weight`` ...).

    Args:
        ceil_mode: pooling rounding. E-LPIPS (reference, "VALID" pooling) uses floor (``False``); LPIPS uses
            torchvision's own ``ceil_mode=True``.
        taps: ``"elpips"`` (input, conv1, fire2 ... fire9: 10 taps) or ``"lpips"`` (relu1 ... relu7).
    """

    def __init__(self, ceil_mode: bool = False, taps: str = "elpips") -> None:
        super().__init__()
        if taps not in ("elpips", "lpips"):
            raise ValueError(f"taps must be 'elpips' or 'lpips', got {taps!r}")
        self.ceil_mode = ceil_mode
        self.taps = taps
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=3, stride=2),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=ceil_mode),
            Fire(64, 16, 64, 64),
            Fire(128, 16, 64, 64),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=ceil_mode),
            Fire(128, 32, 128, 128),
            Fire(256, 32, 128, 128),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=ceil_mode),
            Fire(256, 48, 192, 192),
            Fire(384, 48, 192, 192),
            Fire(384, 64, 256, 256),
            Fire(512, 64, 256, 256),
        )
        self._stages, self._conv_numbers = self._stage_plan()

    @property
    def tap_channels(self) -> list[int]:
        if self.taps == "elpips":
            return [3, 64, 128, 128, 256, 256, 384, 384, 512, 512]
        return [64, 128, 256, 384, 384, 512, 512]

    def _is_tap(self, index: int) -> bool:
        if self.taps == "lpips":
            return index in LPIPS_TAP_LAYERS
        return index == 1 or isinstance(self.features[index], Fire)

    def _stage_plan(self) -> tuple[list[list[int]], dict[int, int]]:
        """Indices into ``features`` that each stage runs (the ReLU at index 1 is fused into conv1), and the
        first convolution number of every convolution or Fire module."""
        stages: list[list[int]] = [[]] if self.taps == "elpips" else []  # E-LPIPS: the input is tap 0
        conv_numbers: dict[int, int] = {}
        current: list[int] = []
        convs = 0
        for index, layer in enumerate(self.features):
            if index != 1:
                current.append(index)
            if isinstance(layer, (nn.Conv2d, Fire)):
                conv_numbers[index] = convs
                convs += 1 if isinstance(layer, nn.Conv2d) else 3
            if self._is_tap(index):
                stages.append(current)
                current = []
        return stages, conv_numbers

    def run_layer(self, index: int, x: torch.Tensor, dropout: DropoutHook | None) -> torch.Tensor:
        layer = self.features[index]
        if isinstance(layer, nn.Conv2d):
            return conv_relu(layer, x, dropout, self._conv_numbers[index])
        if index in _POOL_INDICES:
            return F.max_pool2d(x, 3, 2, ceil_mode=self.ceil_mode)
        fire = cast(Fire, layer)  # every other layer is a Fire module
        conv_index = self._conv_numbers[index]
        squeezed = conv_relu(fire.squeeze, x, dropout, conv_index)
        expand1 = conv_relu(fire.expand1x1, squeezed, dropout, conv_index + 1)
        expand3 = conv_relu(fire.expand3x3, squeezed, dropout, conv_index + 2)
        return torch.cat([expand1, expand3], dim=1)
