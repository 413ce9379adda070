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
    """``relu(conv(dropout(x)))``; under :func:`torch.autocast`, with the weights cast once
    (:func:`autocast_weights`)."""
    if dropout is not None:
        x = dropout(x, index)
    weights = autocast_weights(conv, x.device.type)
    output = conv(x) if weights is None else conv._conv_forward(x, *weights)
    return torch.relu_(output)  # in place: the convolution's backward does not need its output


def autocast_weights(conv: nn.Conv2d, device_type: str) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """``conv``'s weight and bias in the dtype of the autocast in force on ``device_type``, cast once and kept on
    the module while the weights stay the same tensors (their storage, device and version); ``None`` without
    autocast or where autocast would not cast them.

    Autocast caches its casts only for leaf tensors that require gradients; the backbones' frozen weights are
    buffers, so without this every pass re-casts them (VGG16: 14.7 million weights, about 10 ms per pass on a
    CPU core). The cast is the one autocast makes, so the results are the same bit for bit.
    """
    if not torch.is_autocast_enabled(device_type):
        return None
    dtype = torch.get_autocast_dtype(device_type)
    weight, bias = conv.weight, conv.bias
    if weight.dtype == dtype or weight.dtype not in (torch.float32, torch.float64) or weight.requires_grad:
        return None
    key = (dtype, weight.device, weight.data_ptr(), weight._version,
           None if bias is None else (bias.data_ptr(), bias._version))
    cached = getattr(conv, "_autocast_weights", None)
    if cached is None or cached[0] != key:
        cached = (key, weight.detach().to(dtype), None if bias is None else bias.detach().to(dtype))
        object.__setattr__(conv, "_autocast_weights", cached)  # a plain attribute: no buffer, no state-dict key
    return cached[1], cached[2]


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
