"""SqueezeNet 1.1 (torchvision layout) with E-LPIPS and LPIPS feature taps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.squeezenet import Fire

from .common import DropoutHook, conv_relu

_POOL_INDICES = (2, 5, 8)
LPIPS_TAP_LAYERS = (1, 4, 7, 9, 10, 11, 12)
"""torchvision ``features`` indices after which LPIPS taps (relu1 ... relu7, as the ``lpips`` package slices)."""


class SqueezeNetFeatures(nn.Module):
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

    @property
    def tap_channels(self) -> list[int]:
        if self.taps == "elpips":
            return [3, 64, 128, 128, 256, 256, 384, 384, 512, 512]
        return [64, 128, 256, 384, 384, 512, 512]

    def _is_tap(self, index: int) -> bool:
        if self.taps == "lpips":
            return index in LPIPS_TAP_LAYERS
        return index == 1 or isinstance(self.features[index], Fire)

    def forward(self, x: torch.Tensor, dropout: DropoutHook | None = None) -> list[torch.Tensor]:
        """``x``: ``[B, 3, H, W]`` normalised input. Returns the tap activations, shallowest first."""
        taps: list[torch.Tensor] = [x] if self.taps == "elpips" else []
        conv_index = 0
        for index, layer in enumerate(self.features):
            if index == 0:
                x = conv_relu(layer, x, dropout, conv_index)
                conv_index += 1
            elif index == 1:
                pass  # the ReLU is part of conv_relu above
            elif index in _POOL_INDICES:
                x = F.max_pool2d(x, 3, 2, ceil_mode=self.ceil_mode)
            else:
                squeezed = conv_relu(layer.squeeze, x, dropout, conv_index)
                expand1 = conv_relu(layer.expand1x1, squeezed, dropout, conv_index + 1)
                expand3 = conv_relu(layer.expand3x3, squeezed, dropout, conv_index + 2)
                x = torch.cat([expand1, expand3], dim=1)
                conv_index += 3
            if self._is_tap(index):
                taps.append(x)
        return taps
