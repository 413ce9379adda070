"""Pieces shared by the backbones."""

from __future__ import annotations

from collections.abc import Callable

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


class StagedBackbone(nn.Module):
    """A feature network run tap by tap: stage ``k`` maps tap ``k - 1`` (or the input) to tap ``k``, so that a
    caller can checkpoint stage by stage. Subclasses fill ``self._stages`` (indices into their layers) and
    implement :meth:`run_layer`."""

    _stages: list[list[int]]

    @property
    def num_stages(self) -> int:
        """Number of stages, one per tap."""
        return len(self._stages)

    @property
    def tap_channels(self) -> list[int]:
        """Channels of each tap, shallowest first."""
        raise NotImplementedError

    def run_stage(self, stage: int, x: torch.Tensor, dropout: DropoutHook | None = None) -> torch.Tensor:
        """Tap ``stage`` from tap ``stage - 1`` (stage 0: from the input; E-LPIPS stage 0 is the identity)."""
        for index in self._stages[stage]:
            x = self.run_layer(index, x, dropout)
        return x

    def run_layer(self, index: int, x: torch.Tensor, dropout: DropoutHook | None) -> torch.Tensor:
        """Layer ``index`` of the network applied to ``x`` (dropout before every convolution)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, dropout: DropoutHook | None = None) -> list[torch.Tensor]:
        """``x``: ``[B, 3, H, W]`` normalised input. Returns the tap activations, shallowest first."""
        taps: list[torch.Tensor] = []
        for stage in range(self.num_stages):
            x = self.run_stage(stage, x, dropout)
            taps.append(x)
        return taps
