"""Pieces shared by the backbones."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

DropoutHook = Callable[[torch.Tensor, int], torch.Tensor]
"""``hook(inputs, conv_index) -> inputs``: applied to the input of every convolution (E-LPIPS dropout)."""


def init_like_torchvision(module: nn.Module) -> None:
    """Kaiming-normal (fan-out, ReLU) convolution weights and zero biases, as torchvision initialises VGG.

    Uses torch's global generator: callers seed it inside :func:`torch.random.fork_rng`.
    """
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def conv_relu(conv: nn.Conv2d, x: torch.Tensor, dropout: DropoutHook | None, index: int) -> torch.Tensor:
    """``relu(conv(dropout(x)))``."""
    if dropout is not None:
        x = dropout(x, index)
    return torch.relu_(conv(x))  # in place: the convolution's backward does not need its output


def parameters_to_buffers(module: nn.Module) -> None:
    """Turn every parameter of ``module`` (recursively) into a persistent buffer of the same name.

    The state-dict keys stay the same (``features.0.weight`` ...), so loading and saving work as before, but the
    weights no longer appear in ``module.parameters()``: an optimiser built from a model that holds the metric
    as a submodule can never pick them up, and nothing ever accumulates gradients in them.
    """
    for submodule in module.modules():
        for name in list(submodule._parameters):
            parameter = submodule._parameters.pop(name)
            submodule.register_buffer(name, None if parameter is None else parameter.detach().requires_grad_(False))
