"""The small image-to-image CNN of the loss example (``elpips train-example``) and of the loss benchmarks."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn


class ResidualCNN(nn.Module):
    """``clamp(x + f(x), 0, 1)`` with ``f`` a stack of ``depth`` 3x3 convolutions (ReLU between them)."""

    def __init__(self, width: int = 32, depth: int = 4) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be >= 2 (the CNN needs at least 2 convolutions), got {depth}")
        channels = [3] + [width] * (depth - 1) + [3]
        layers: list[nn.Module] = []
        for index, (inputs, outputs) in enumerate(zip(channels[:-1], channels[1:], strict=False)):
            layers.append(nn.Conv2d(inputs, outputs, 3, padding=1, padding_mode="reflect"))
            if index < depth - 1:
                layers.append(nn.ReLU())
        self.body = nn.Sequential(*layers)
        last = cast(nn.Conv2d, self.body[-1])  # Sequential indexing is typed as any Module
        nn.init.zeros_(last.weight)  # starts as the identity: the loss curve starts at the input's
        assert last.bias is not None  # built with a bias
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.body(x)).clamp(0, 1)
