"""The network side of :class:`~elpips.Metric`: its backbone and linear weights, the draws of an ensemble sample
(transform record, dropout masks), and the way from images to normalised taps (transform, scaling to the
network's range, memory layout, dropout hook, normalisation)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from ._inputs import check_scaled_size
from .backbones import AlexNetFeatures, SqueezeNetFeatures, VGG16Features
from .backbones.common import StagedBackbone, parameters_to_buffers
from .configs import MetricConfig
from .distance import normalize_channels, scale_input
from .dropout import DropoutMasks
from .precision import gradient_scale, network_autocast, scale_gradient
from .transforms import TransformRecord, apply_transform, default_scale_levels, sample_transform
from .weights import WeightsInfo, load_backbone_weights, load_linear_weights

if TYPE_CHECKING:
    from .metric import EnsembleSample, Metric

Features = list[torch.Tensor]
"""Normalised taps, each ``[..., N, C_l, h_l, w_l]`` (L2: the images themselves, one entry)."""

CHANNELS_LAST_DEVICES: tuple[str, ...] = ("cpu",)
"""Device types where ``channels_last=None`` runs the network channels-last. On the CPU (oneDNN convolutions,
1 thread, 128 px) VGG16 forward+backward took 0.89x the time of the default layout and E-LPIPS-VGG 0.87x.
CUDA keeps the default layout until it is measured there (``elpips bench --device cuda`` times both)."""


DropoutHook = Callable[[torch.Tensor, int], torch.Tensor]
"""The network's dropout hook: ``(inputs [B, C, h, w], layer) -> masked inputs``."""


def new_backbone(config: MetricConfig) -> StagedBackbone | None:
    """The named metric's feature network (E-LPIPS: average pooling and the E-LPIPS taps), ``None`` for ``l2``."""
    if config.backbone == "vgg16":
        return VGG16Features(pooling="avg" if config.is_elpips else "max",
                             taps="elpips" if config.is_elpips else "lpips")
    if config.backbone == "squeezenet1_1":
        return SqueezeNetFeatures(ceil_mode=not config.is_elpips, taps="elpips" if config.is_elpips else "lpips")
    if config.backbone == "alexnet":
        return AlexNetFeatures()
    return None


def build_network(metric: Metric, backbone_weights: str | os.PathLike,
                  linear_weights: str | os.PathLike | None) -> None:
    """Set ``metric.backbone`` (``None`` for ``l2``) with its weights loaded and frozen as buffers (never in an
    optimiser, torchvision's state-dict keys), ``metric.weights_info`` and the linear weights."""
    metric.backbone = new_backbone(metric.config)
    metric.weights_info = WeightsInfo("none", "no network weights (pixel distance)", True, "none")
    metric.linear_weights_source = "none"
    if metric.backbone is not None:
        metric.weights_info = load_backbone_weights(metric.backbone, metric.config.backbone, backbone_weights)
        parameters_to_buffers(metric.backbone)
        register_linear_weights(metric, linear_weights)


def feature_network(metric: Metric) -> StagedBackbone:
    """``metric.backbone`` where the metric must have one (``ValueError`` for ``l2``, which has no network)."""
    if metric.backbone is None:
        raise ValueError(f"{metric.name} has no feature network")
    return metric.backbone


def register_linear_weights(metric: Metric, linear_weights: str | os.PathLike | None) -> None:
    """Load the linear weights (``None``: the metric's own; ``"kettunen"``: the authors' retrained LPIPS weights)
    and register them on ``metric`` as buffers ``lin0, lin1, ...`` (``[C_l]`` each), checked against the taps."""
    config = metric.config
    spec = config.linear_weights if linear_weights is None else linear_weights
    if spec == "kettunen":
        if config.is_elpips:
            raise ValueError("linear_weights='kettunen' names the authors' LPIPS weights: use an lpips-* metric")
        if config.backbone == "alexnet":
            raise ValueError("linear_weights='kettunen': the E-LPIPS authors retrained LPIPS weights for VGG and "
                             "SqueezeNet only; use lpips-vgg or lpips-squeeze")
        spec = f"kettunen_{config.name.replace('-', '_')}"
    weights, metric.linear_weights_source = load_linear_weights(spec)
    expected = feature_network(metric).tap_channels
    if [len(w) for w in weights] != expected:
        raise ValueError(
            f"linear weights {metric.linear_weights_source} have channels {[len(w) for w in weights]}, "
            f"but {config.name} taps have {expected}"
        )
    for index, weight in enumerate(weights):
        metric.register_buffer(f"lin{index}", weight)


def dropout_enabled(metric: Metric, dropout: bool | None) -> bool:
    """Whether a sample has dropout: the ensemble's setting, or ``dropout`` where given (``ValueError`` for
    ``dropout=True`` on an ensemble with dropout off)."""
    enabled = metric.ensemble.dropout if dropout is None else dropout
    if enabled and not metric.ensemble.dropout:
        raise ValueError(f"dropout=True: this {metric.name} metric's ensemble has dropout off")
    return bool(enabled)


def dropout_masks(metric: Metric, generator: torch.Generator, dropout: bool | None) -> DropoutMasks | None:
    """A sample's dropout masks (one seed drawn from ``generator``), or ``None`` without dropout (nothing drawn)."""
    if not dropout_enabled(metric, dropout):
        return None
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    keep = metric.dropout_keep
    assert keep is not None  # dropout is on: the ensemble filled in its keep probability
    return DropoutMasks(seed, keep)


def draw_transform(metric: Metric, batch: int, height: int, width: int,
                   generator: torch.Generator) -> TransformRecord | None:
    """The transform record of one ensemble sample for ``batch`` images of ``height x width`` (checked against
    the network's minimum size), or ``None`` for an ensemble without transformations (nothing drawn)."""
    if not metric.ensemble.transforms:
        return None
    levels = (metric.scale_levels or default_scale_levels(height, width)) if metric.ensemble.scaling else 1
    check_scaled_size(metric, height, width, levels, metric.ensemble)
    return sample_transform(batch, height, width, generator=generator, ensemble=metric.ensemble)


def normalized_tap(tap: torch.Tensor, fused: bool = True, grad_scale: float = 1.0) -> torch.Tensor:
    """Unit-normalised channels in float32 (float64 stays float64; bf16/fp16 taps are upcast). ``grad_scale``: the
    float16 backward's factor, applied to the gradient where it enters the tap (every tap: the network's input,
    which divides it out again, is one)."""
    if tap.dtype not in (torch.float32, torch.float64):
        tap = tap.float()
    return normalize_channels(scale_gradient(tap, grad_scale), fused)


def network_stage(metric: Metric, run: Callable[[], torch.Tensor | list[torch.Tensor]]):
    """``run()`` (a backbone call) in the metric's precision (:func:`elpips.precision.network_autocast`)."""
    with network_autocast(metric.precision, metric.device):
        return run()


class ToLayout(torch.autograd.Function):
    """``images`` in memory format ``layout``; the gradient goes back in the layout ``images`` had, so that a
    caller's default-layout model receives default-layout gradients from a channels-last network (a 3-channel
    copy either way)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(images: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
        return images.contiguous(memory_format=layout)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        images, _ = inputs
        ctx.source_layout = (torch.contiguous_format if images.is_contiguous()
                             else torch.channels_last if images.is_contiguous(memory_format=torch.channels_last)
                             else torch.preserve_format)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if ctx.source_layout is torch.preserve_format:
            return grad, None
        return grad.contiguous(memory_format=ctx.source_layout), None


def network_layout(channels_last: bool | None, device: torch.device) -> torch.memory_format:
    """The memory format the network runs in on ``device``: channels-last when asked for, or for ``None`` on
    the device types in :data:`CHANNELS_LAST_DEVICES`."""
    channels_last = device.type in CHANNELS_LAST_DEVICES if channels_last is None else channels_last
    return torch.channels_last if channels_last else torch.contiguous_format


def lay_out_backbone(backbone: nn.Module, layout: torch.memory_format) -> None:
    """Store the convolution weights in ``layout`` (once: a no-op while they already are)."""
    first = next(buffer for buffer in backbone.buffers() if buffer.dim() == 4)
    if not first.is_contiguous(memory_format=layout):
        # Ordinary tensors even when the first call runs under torch.inference_mode(): inference tensors
        # as weights could never be used in a differentiable call again.
        with torch.inference_mode(False), torch.no_grad():
            backbone.to(memory_format=layout)


def set_periodic_padding(backbone: nn.Module, periodic: bool) -> None:
    """Every padded convolution of ``backbone`` pads circularly (``periodic``: the tileable mode, a network on the
    torus) or with zeros (the reference); a no-op while they already do."""
    mode: Literal["circular", "zeros"] = "circular" if periodic else "zeros"
    for layer in backbone.modules():
        if isinstance(layer, nn.Conv2d) and any(layer.padding) and layer.padding_mode != mode:
            layer.padding_mode = mode


def network_input(metric: Metric, x: torch.Tensor,
                  sample: EnsembleSample | None) -> tuple[torch.Tensor, DropoutHook | None, int, int]:
    """``x`` ``[G, N, 3, H, W]`` -> ``(flat, dropout, G, N)``: the transformed, scaled ``[G*N, 3, h, w]`` batch
    in the network's layout and its dropout hook (``None`` without dropout), all groups under ``sample``."""
    groups, batch = x.shape[:2]
    dropout = None
    if metric.is_stochastic:
        if sample is None:
            raise ValueError(f"{metric.name} needs an ensemble sample: call metric.sample(...) first")
        if sample.transform is not None:
            x = apply_transform(x, sample.transform)
        if sample.dropout is not None:
            masks = sample.dropout

            def dropout(inputs: torch.Tensor, layer: int) -> torch.Tensor:
                return masks(inputs, layer, groups)

    flat = scale_input(x.reshape(groups * batch, *x.shape[2:]))
    layout = metric.memory_format(flat.device)
    backbone = feature_network(metric)
    lay_out_backbone(backbone, layout)
    set_periodic_padding(backbone, metric.ensemble.tileable)
    flat = scale_gradient(flat, 1.0 / gradient_scale(metric.precision))  # float16: the backward's scale undone
    return ToLayout.apply(flat, layout), dropout, groups, batch


def network_features(metric: Metric, images: torch.Tensor, sample: EnsembleSample | None) -> Features:
    """:meth:`Metric.features`: one tensor per tap, ``[(G,) N, C, h, w]``, from ``images`` ``[(G,) N, 3, H, W]``
    (the images themselves, one entry, for ``l2``)."""
    backbone = metric.backbone
    if backbone is None:
        return [images]
    grouped = images.dim() == 5
    flat, dropout, groups, batch = network_input(metric, images if grouped else images.unsqueeze(0), sample)
    taps = network_stage(metric, lambda: backbone(flat, dropout))
    grad_scale = gradient_scale(metric.precision)
    result = []
    for tap in taps:
        normalized = normalized_tap(tap, metric._fused, grad_scale)
        shape = (groups, batch, *normalized.shape[1:]) if grouped else (batch, *normalized.shape[1:])
        result.append(normalized.reshape(shape))
    return result
