"""AlexNet (torchvision layout) with the LPIPS feature taps (the ``lpips`` package's default network)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import DropoutHook, StagedBackbone, conv_relu

LPIPS_TAP_LAYERS = (1, 4, 7, 9, 11)
"""torchvision ``features`` indices after which LPIPS taps (relu1 ... relu5, as the ``lpips`` package slices)."""


class AlexNetFeatures(StagedBackbone):
    """torchvision AlexNet ``features`` up to relu5 (the last pooling layer is never needed), LPIPS taps only.

    Parameter names match torchvision (``features.0.weight`` ...), so a torchvision state dict loads directly.
    There are no E-LPIPS linear weights for AlexNet, so it serves ``lpips-alex`` only.
    """

    taps = "lpips"

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=False),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=False),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=False),
        )
        self._stages: list[list[int]] = []
        self._conv_numbers: dict[int, int] = {}
        current: list[int] = []
        for index, layer in enumerate(self.features):
            if isinstance(layer, nn.Conv2d):
                self._conv_numbers[index] = len(self._conv_numbers)
            if not isinstance(layer, nn.ReLU):  # fused into their convolution
                current.append(index)
            if index in LPIPS_TAP_LAYERS:
                self._stages.append(current)
                current = []

    @property
    def tap_channels(self) -> list[int]:
        return [64, 192, 384, 256, 256]

    def run_layer(self, index: int, x: torch.Tensor, dropout: DropoutHook | None) -> torch.Tensor:
        layer = self.features[index]
        if isinstance(layer, nn.Conv2d):
            return conv_relu(layer, x, dropout, self._conv_numbers[index])
        return F.max_pool2d(x, 3, 2)
