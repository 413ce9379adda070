"""``elpips.Metric``: E-LPIPS, LPIPS and L2 behind one call, ``Metric("elpips-vgg")(x, y)``.

Two layers of API:

* The everyday calls: ``metric(x, y, n)``, ``metric.compare(reference, candidates, n)``,
  ``metric.estimate(x, y)``. Inputs are float ``[N, 3, H, W]`` in ``[0, 1]``, checked on entry.
* The solver layer (no input checks, no copies): ``sample = metric.sample(N, H, W)`` draws one ensemble sample
  (transform + dropout masks), ``metric.features(images, sample)`` computes normalised taps for any number of
  image groups under that sample, and ``metric.distance_between(fa, fb)`` turns two feature sets into
  distances. Features of images that do not require grad are computed without a graph, so a solver can
  compute references once and compare them with its variables at the cost of one forward pass each.
"""

from __future__ import annotations

import operator
import os
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .backbones import SqueezeNetFeatures, VGG16Features
from .backbones.common import parameters_to_buffers
from .configs import MetricConfig, get_config
from .ensemble import EnsembleConfig
from .devices import resolve_device
from .distance import (normalize_channels, rms_distance, scale_input, tap_distance, weighted_adjacent_distances,
                       weighted_distance)
from .dropout import DropoutMasks
from .estimate import Estimate, sequential_estimate
from .record import PRECISION, tensor_digest
from .memory import MIN_BUDGET, default_memory_budget, images_per_pass
from .tiling import BlockDropoutMasks, core_size, tiled_distance
from .transforms import (TransformRecord, apply_transform, default_num_scales, offset_size, sample_transform,
                         scaled_size)
from .validation import check_images, check_same_shape
from .weights import WeightsInfo, load_backbone_weights, load_linear_weights

Features = list[torch.Tensor]
"""Normalised taps, each ``[..., N, C_l, h_l, w_l]`` (L2: the images themselves, one entry)."""

CHANNELS_LAST_DEVICES: tuple[str, ...] = ("cpu",)
"""Device types where ``channels_last=None`` runs the network channels-last. On the CPU (oneDNN convolutions,
1 thread, 128 px) VGG16 forward+backward took 0.89x the time of the default layout and E-LPIPS-VGG 0.87x.
CUDA keeps the default layout until it is measured there (``elpips bench --device cuda`` times both)."""

Reduction = Literal["none", "mean", "sum"]
REDUCTIONS: tuple[str, ...] = ("none", "mean", "sum")


def _check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    return reduction


SEED_LIMIT = 2**64
"""Seeds are integers in ``0 .. SEED_LIMIT - 1``, the range of a torch generator's 64-bit seed."""


def _check_seed(seed: int | None) -> int | None:
    """``seed`` as an int (``None`` kept); ``ValueError`` naming ``seed`` for a non-integer or out-of-range one."""
    if seed is None:
        return None
    try:
        value = None if isinstance(seed, bool) else operator.index(seed)
    except TypeError:
        value = None
    if value is None or not 0 <= value < SEED_LIMIT:
        raise ValueError(f"seed must be an integer in 0 .. 2**64 - 1, got {seed!r}")
    return value


def _reduce(distances: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return distances.mean()
    if reduction == "sum":
        return distances.sum()
    return distances


def _check_sample_count(n: object) -> None:
    """``n`` (ensemble samples) must be a positive integer."""
    try:
        count = operator.index(n)  # ints and NumPy integers; not floats or bools
    except TypeError:
        count = 0
    if isinstance(n, bool) or count < 1:
        raise ValueError(f"n must be a positive integer (the number of ensemble samples), got {n!r}")


def _passes(total: int, per_pass: int) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges covering ``0..total-1`` in pieces of at most ``per_pass``."""
    return [(start, min(total, start + per_pass)) for start in range(0, total, per_pass)]


@dataclass
class EnsembleSample:
    """One draw of the ensemble: the input transformation and the dropout masks (``None`` where unused)."""

    transform: TransformRecord | None
    dropout: DropoutMasks | None


def _new_backbone(config: MetricConfig) -> nn.Module | None:
    if config.backbone == "vgg16":
        return VGG16Features(pooling="avg" if config.is_elpips else "max",
                             taps="elpips" if config.is_elpips else "lpips")
    if config.backbone == "squeezenet1_1":
        return SqueezeNetFeatures(ceil_mode=not config.is_elpips, taps="elpips" if config.is_elpips else "lpips")
    return None


def resolve_ensemble(config: MetricConfig, ensemble: EnsembleConfig | None, num_scales: int | None,
                     dropout_keep: float | None) -> EnsembleConfig:
    """The ensemble a :class:`Metric` runs: ``ensemble`` (default: the named metric's own) with the
    ``num_scales`` / ``dropout_keep`` shortcuts applied where it has scaling / dropout (ignored where it has
    not, e.g. for LPIPS); ``ValueError`` for impossible values."""
    if ensemble is None:
        ensemble = config.ensemble
    elif not isinstance(ensemble, EnsembleConfig):
        raise ValueError(f"ensemble must be an elpips.EnsembleConfig, got {type(ensemble).__name__}")
    changes = {name: value for name, value in (("scale_levels", num_scales), ("dropout_keep", dropout_keep))
               if value is not None}
    if changes:
        ensemble = ensemble.updated(strict=False, **changes)
    if config.backbone == "none" and ensemble.is_stochastic:
        raise ValueError(f"{config.name} has no network: it takes no ensemble (got {ensemble.summary()})")
    return ensemble


def _normalized(tap: torch.Tensor, fused: bool = True) -> torch.Tensor:
    """Unit-normalised channels in float32 (float64 stays float64; autocast's bf16/fp16 taps are upcast)."""
    return normalize_channels(tap if tap.dtype in (torch.float32, torch.float64) else tap.float(), fused)


class _ToLayout(torch.autograd.Function):
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


class Metric(nn.Module):
    """A perceptual distance: E-LPIPS (``elpips-vgg``, ``elpips-squeeze``), LPIPS (``lpips-vgg``,
    ``lpips-squeeze``) or plain RMS (``l2``).

    Args:
        name: metric name (:data:`elpips.METRIC_NAMES`).
        backbone_weights: ``"imagenet"`` (torchvision weights: ``$TORCH_HOME`` cache, else download), a path to a
            torchvision state dict, or ``"random"`` / ``"random:SEED"`` (uncalibrated, for tests and smoke runs).
        linear_weights: ``None`` (the metric's own), ``"kettunen"`` (the E-LPIPS authors' retrained LPIPS weights,
            LPIPS metrics only), a packaged name, or a path to an ``.npz`` / ``lpips``-layout ``.pth`` file.
        device: ``None`` picks CUDA, then MPS, then CPU.
        seed: seeds the ensemble sampling (``None``: nondeterministic).
        ensemble: which random transformations and dropout are on, and their parameters
            (:class:`~elpips.EnsembleConfig`, docs/algorithm.md#ensemble); ``None``: the named metric's own (full for
            ``elpips-*``, none for ``lpips-*``; the ablation rungs ``elpips-vgg+...`` have their own).
        num_scales: shortcut for the ensemble's ``scale_levels`` (``None``: ``clamp(min(H, W) // 64, 1, 8)`` per
            image size, or the ensemble's value; ignored by an ensemble without scaling).
        dropout_keep: shortcut for the ensemble's ``dropout_keep`` (``None``: the ensemble's, 0.99 by default;
            ignored by an ensemble without dropout).
        reduction: what :meth:`forward` returns: ``"none"`` (default, ``[N]`` per image), ``"mean"`` or ``"sum"``
            (a scalar); ``forward(..., reduction=...)`` overrides it for one call.
        channels_last: run the network in channels-last memory format (``torch.channels_last``); ``None``
            (default) picks it on the CPU, where it was measured faster (the convolutions, and the
            normalisation's per-pixel channel sums, read contiguous memory), and the default layout elsewhere.
            Distances do not depend on it beyond float rounding (the dropout masks are the same).
        higher_order_gradients: use plain autograd operations for the normalisation and distances instead of
            the default hand-written first-order backward passes (see below).
        memory_budget: bytes one network pass may use (``None``: :func:`elpips.memory.default_memory_budget`,
            2 GiB or a quarter of the free memory on the CPU, half the free memory of a GPU). Ensemble samples,
            candidates and batch images are evaluated in as many passes as that takes, so the peak memory of
            ``metric(x, y, n)``, :meth:`compare` and :meth:`estimate` does not grow with ``n`` or the number of
            candidates. Results within one pass are unchanged; a call split into several passes draws one
            stratified transform record for all of them and fresh dropout masks per pass.
        checkpoint_activations: recompute the network's activations in the backward pass instead of keeping
            them (``torch.utils.checkpoint``, one segment per tap, normalisation and tap distance included).
            Used only when autograd needs it (grad enabled and an input requires grad); trades about one extra
            forward pass for a smaller peak memory (large images, large batches). Gradients are unchanged: the
            dropout masks of a sample are cached, so the recomputation sees the same masks.

    Using it as a training loss::

        metric = elpips.Metric("elpips-vgg", reduction="mean")
        loss = metric(model(noisy), clean)          # scalar; n=1 sample per step is the reference's practice
        loss.backward()

    The network and linear weights are frozen and stored as buffers (the state-dict keys are torchvision's), so
    ``metric.parameters()`` is empty: an optimiser built from ``model.parameters()`` of a model that holds the
    metric as a submodule never contains them, and no gradient is ever computed for them. Inputs must be in
    ``[0, 1]`` (checked: clamp the model's output, e.g. ``output.clamp(0, 1)``, or use a sigmoid).

    Gradients are first order by default: the normalisation and tap distance have hand-written backward passes
    (fewer passes over memory), so differentiating a gradient again (``create_graph=True``, a gradient penalty
    through the metric) raises an error naming ``higher_order_gradients=True``, which switches them to plain
    autograd operations (slower; any order, ``torch.func`` transforms and forward-mode AD work).

    Autocast (``torch.autocast``; tested with bf16 on the CPU) runs the network in low precision and
    the normalisation and distances in float32; the result is float32. Under ``DistributedDataParallel`` wrap
    only the trainable model, compute the metric on its output on every rank (give each rank its own ``seed``
    for independent ensemble samples). ``torch.compile`` of a training step that calls the metric runs, but
    the data-dependent input checks, the per-call transform sampling (its random scale changes shapes) and the
    dropout-mask cache split it into many graphs and cause recompilations: on the CPU it compiled for over a
    minute and then ran slower than eager mode. Compile the model, not the metric.
    """

    def __init__(
        self,
        name: str = "elpips-vgg",
        backbone_weights: str | os.PathLike = "imagenet",
        linear_weights: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        seed: int | None = None,
        num_scales: int | None = None,
        dropout_keep: float | None = None,
        reduction: Reduction = "none",
        checkpoint_activations: bool = False,
        channels_last: bool | None = None,
        higher_order_gradients: bool = False,
        memory_budget: int | None = None,
        ensemble: EnsembleConfig | None = None,
    ) -> None:
        super().__init__()
        self.config = get_config(name)
        self.ensemble = resolve_ensemble(self.config, ensemble, num_scales, dropout_keep)
        self.reduction = _check_reduction(reduction)
        seed = _check_seed(seed)
        self.checkpoint_activations = bool(checkpoint_activations)
        self.channels_last = None if channels_last is None else bool(channels_last)
        self.higher_order_gradients = bool(higher_order_gradients)
        if memory_budget is not None and memory_budget < MIN_BUDGET:
            raise ValueError(f"memory_budget must be at least {MIN_BUDGET} bytes, got {memory_budget}")
        self.memory_budget = memory_budget
        self.backbone = _new_backbone(self.config)
        self.weights_info = WeightsInfo("none", "no network weights (pixel distance)", True, "none")
        self.linear_weights_source = "none"
        if self.backbone is not None:
            self.weights_info = load_backbone_weights(self.backbone, self.config.backbone, backbone_weights)
            parameters_to_buffers(self.backbone)  # frozen: never in an optimiser, same state-dict keys
            self._load_linear(linear_weights)
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        self.requires_grad_(False)
        self.eval()
        self.to(resolve_device(device))
        if self.backbone is not None:
            self._lay_out_backbone(self.memory_format(self.device))

    def _load_linear(self, linear_weights: str | os.PathLike | None) -> None:
        spec = self.config.linear_weights if linear_weights is None else linear_weights
        if spec == "kettunen":
            if self.config.is_elpips:
                raise ValueError("linear_weights='kettunen' names the authors' LPIPS weights: use an lpips-* metric")
            spec = f"kettunen_{self.config.name.replace('-', '_')}"
        weights, self.linear_weights_source = load_linear_weights(spec)
        expected = self.backbone.tap_channels
        if [len(w) for w in weights] != expected:
            raise ValueError(
                f"linear weights {self.linear_weights_source} have channels {[len(w) for w in weights]}, "
                f"but {self.config.name} taps have {expected}"
            )
        for index, weight in enumerate(weights):
            self.register_buffer(f"lin{index}", weight)

    # -- properties ---------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.config.name

    @property
    def device(self) -> torch.device:
        buffer = next(self.buffers(), None)
        return buffer.device if buffer is not None else self._device_hint

    def _apply(self, fn, *args, **kwargs):  # keep a device hint for the weightless L2 metric
        self._device_hint = fn(torch.empty(0)).device
        return super()._apply(fn, *args, **kwargs)

    @property
    def _fused(self) -> bool:
        """Whether the normalisation and distances use the fast first-order backward passes."""
        return not self.higher_order_gradients

    @property
    def calibrated(self) -> bool:
        """``False`` when the backbone is random: distances are then not perceptual."""
        return self.weights_info.calibrated

    @property
    def is_stochastic(self) -> bool:
        """``True`` when the ensemble has any random piece (E-LPIPS); LPIPS, L2 and ``+all-layers`` are
        deterministic."""
        return self.ensemble.is_stochastic

    @property
    def num_scales(self) -> int | None:
        """The ensemble's scale levels (``None``: chosen per image size, or scaling off)."""
        return self.ensemble.scale_levels

    @property
    def dropout_keep(self) -> float | None:
        """The ensemble's dropout keep probability (``None`` with dropout off)."""
        return self.ensemble.dropout_keep

    @property
    def custom_ensemble(self) -> bool:
        """Whether the ensemble differs from the named metric's own."""
        return self.ensemble != self.config.ensemble

    @property
    def linear_weights(self) -> list[torch.Tensor]:
        return [buffer for name, buffer in self.named_buffers() if name.startswith("lin")]

    @property
    def min_size(self) -> int:
        return self.config.min_size

    def identity(self) -> dict[str, Any]:
        """Everything that determines this metric's numbers, JSON-ready (a run's record holds it, and a resume
        compares it): ``name``; ``backbone_weights`` as asked for (``"imagenet"``, a file's path,
        ``"random:SEED"``); ``linear_weights`` (their origin); ``weights_sha256``, a digest of the backbone's
        and linear weights' values (it tells two files of one name apart); ``ensemble`` (every setting) and
        ``precision``."""
        return {"name": self.name, "backbone_weights": self.weights_info.spec,
                "linear_weights": self.linear_weights_source,
                "weights_sha256": tensor_digest(self.state_dict().values()),
                "ensemble": self.ensemble.as_dict(), "precision": PRECISION}

    def extra_repr(self) -> str:
        extra = f", reduction={self.reduction!r}" if self.reduction != "none" else ""
        extra += ", checkpoint_activations=True" if self.checkpoint_activations else ""
        extra += f", channels_last={self.channels_last}" if self.channels_last is not None else ""
        extra += ", higher_order_gradients=True" if self.higher_order_gradients else ""
        extra += f", ensemble={self.ensemble.summary()!r}" if self.custom_ensemble else ""
        return f"name={self.name!r}, weights={self.weights_info.description!r}{extra}"

    # -- solver layer ---------------------------------------------------------------------------------------------
    def sample(self, batch: int, height: int, width: int, generator: torch.Generator | None = None,
               dropout: bool | None = None) -> EnsembleSample:
        """Draw one ensemble sample for ``batch`` images of ``height x width`` (deterministic metrics: an empty
        sample). The transform is drawn first, then the dropout masks' seed (when dropout is on)."""
        if not self.is_stochastic:
            return EnsembleSample(None, None)
        generator = self.generator if generator is None else generator
        record = None
        if self.ensemble.transforms:
            levels = (self.num_scales or default_num_scales(height, width)) if self.ensemble.scaling else 1
            self._check_scaled_size(height, width, levels, self.ensemble)
            record = sample_transform(batch, height, width, generator=generator, ensemble=self.ensemble)
        return EnsembleSample(record, self._dropout_masks(generator, dropout))

    def _check_scaled_size(self, height: int, width: int, scale_level: int, ensemble: EnsembleConfig) -> None:
        """``ValueError`` when scale level ``scale_level`` (and, in crop mode, the offset crop) leaves images
        smaller than the network's minimum size."""
        crop = ensemble.crop
        smallest = min(scaled_size(height, width, scale_level, crop))
        if crop:
            smallest = min(offset_size(smallest, smallest, ensemble.padding, crop))
        if smallest < self.min_size:
            how = f"scale level {scale_level}" + (f" and cropping {ensemble.padding} px" if crop else "")
            raise ValueError(
                f"{how} shrinks {height}x{width} images to {smallest} px, below the "
                f"{self.min_size} px {self.name} needs (use fewer scale levels or larger images)"
            )

    def _dropout_masks(self, generator: torch.Generator, dropout: bool | None) -> DropoutMasks | None:
        enabled = self.ensemble.dropout if dropout is None else dropout
        if not enabled:
            return None
        if not self.ensemble.dropout:
            raise ValueError(f"dropout=True: this {self.name} metric's ensemble has dropout off")
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        return DropoutMasks(seed, self.dropout_keep)

    def sample_for(self, transform: TransformRecord, dropout: bool | None = None,
                   generator: torch.Generator | None = None) -> EnsembleSample:
        """An :class:`EnsembleSample` with a given transform (fresh dropout masks unless ``dropout=False``)."""
        generator = self.generator if generator is None else generator
        return EnsembleSample(transform, self._dropout_masks(generator, dropout))

    def features(self, images: torch.Tensor, sample: EnsembleSample | None = None) -> Features:
        """Normalised taps of ``images`` under ``sample``.

        Args:
            images: ``[N, 3, H, W]`` or ``[G, N, 3, H, W]`` in [0, 1] on this metric's device (not checked).
                All ``G`` groups get the same transform and dropout masks.
            sample: from :meth:`sample`; required for E-LPIPS, ignored by LPIPS and L2.

        Returns:
            One tensor per tap, ``[(G,) N, C, h, w]``, float32 (also under autocast; float64 for a float64 metric).
        """
        if self.backbone is None:
            return [images]
        grouped = images.dim() == 5
        flat, dropout, groups, batch = self._network_input(images if grouped else images.unsqueeze(0), sample)
        taps = self.backbone(flat, dropout)
        result = []
        for tap in taps:
            normalized = _normalized(tap, self._fused)
            shape = (groups, batch, *normalized.shape[1:]) if grouped else (batch, *normalized.shape[1:])
            result.append(normalized.reshape(shape))
        return result

    def _network_input(self, x: torch.Tensor, sample: EnsembleSample | None):
        """``[G, N, 3, H, W]`` -> the transformed, scaled ``[G*N, 3, h, w]`` batch and its dropout hook."""
        groups, batch = x.shape[:2]
        dropout = None
        if self.is_stochastic:
            if sample is None:
                raise ValueError(f"{self.name} needs an ensemble sample: call metric.sample(...) first")
            if sample.transform is not None:
                x = apply_transform(x, sample.transform)
            if sample.dropout is not None:
                masks = sample.dropout

                def dropout(inputs: torch.Tensor, layer: int) -> torch.Tensor:
                    return masks(inputs, layer, groups)

        flat = scale_input(x.reshape(groups * batch, *x.shape[2:]))
        layout = self.memory_format(flat.device)
        self._lay_out_backbone(layout)
        return _ToLayout.apply(flat, layout), dropout, groups, batch

    def memory_format(self, device: torch.device) -> torch.memory_format:
        """The layout the network runs in on ``device`` (see the ``channels_last`` argument)."""
        channels_last = device.type in CHANNELS_LAST_DEVICES if self.channels_last is None else self.channels_last
        return torch.channels_last if channels_last else torch.contiguous_format

    def _lay_out_backbone(self, layout: torch.memory_format) -> None:
        """Store the convolution weights in ``layout`` (once: a no-op while they already are)."""
        first = next(buffer for buffer in self.backbone.buffers() if buffer.dim() == 4)
        if not first.is_contiguous(memory_format=layout):
            # Ordinary tensors even when the first call runs under torch.inference_mode(): inference tensors
            # as weights could never be used in a differentiable call again.
            with torch.inference_mode(False), torch.no_grad():
                self.backbone.to(memory_format=layout)

    def _checkpointing(self, *inputs: torch.Tensor) -> bool:
        """Whether this evaluation recomputes activations in the backward pass (see ``checkpoint_activations``)."""
        return (self.checkpoint_activations and self.backbone is not None and torch.is_grad_enabled()
                and any(tensor.requires_grad for tensor in inputs))

    def _checkpointed_distances(self, variables: torch.Tensor, reference: torch.Tensor,
                                sample: EnsembleSample | None) -> torch.Tensor:
        """Distances ``[G, N]`` from each group of ``variables`` ``[G, N, 3, H, W]`` to ``reference``
        ``[N, 3, H, W]``, equal to ``distance_between(features(variables), features(reference))``.

        One checkpointed segment per tap (network stage, normalisation, tap distance): the backward pass keeps
        only the raw taps of the variables and recomputes the rest. A reference that needs no gradient has its
        normalised taps computed once without a graph (the usual loss case: only the model's output is
        differentiated); one that does is treated as one more group and differentiated through as well.
        """
        if reference.requires_grad:
            return self._checkpointed_group_distances(torch.cat([variables, reference.unsqueeze(0)]), None, sample)
        return self._checkpointed_group_distances(variables, self.features(reference, sample), sample)

    def _checkpointed_group_distances(self, groups_images: torch.Tensor, reference_features: Features | None,
                                      sample: EnsembleSample | None) -> torch.Tensor:
        """See :meth:`_checkpointed_distances`; without ``reference_features`` the last group is the reference."""
        flat, dropout, groups, batch = self._network_input(groups_images, sample)
        weights = self.linear_weights

        def segment(h: torch.Tensor, stage: int, reference_tap: torch.Tensor | None):
            tap = self.backbone.run_stage(stage, h, dropout)
            normalized = _normalized(tap, self._fused)
            normalized = normalized.reshape(groups, batch, *normalized.shape[1:])
            if reference_tap is None:
                return tap, tap_distance(normalized[:-1], normalized[-1], weights[stage], self._fused)
            return tap, tap_distance(normalized, reference_tap, weights[stage], self._fused)

        total = None
        h = flat
        for stage in range(self.backbone.num_stages):
            reference_tap = None if reference_features is None else reference_features[stage]
            h, distance = checkpoint(segment, h, stage, reference_tap, use_reentrant=False)
            total = distance if total is None else total + distance
        return total

    def _pair_distances(self, x: torch.Tensor, y: torch.Tensor, sample: EnsembleSample | None) -> torch.Tensor:
        """``[N]`` distances of ``x`` and ``y`` under one ``sample`` (checkpointed when asked for and needed)."""
        if self._checkpointing(x, y):
            if y.requires_grad and not x.requires_grad:  # distances are symmetric in x and y: x is the variable
                x, y = y, x
            return self._checkpointed_distances(x.unsqueeze(0), y, sample)[0]
        return self.distance_between(self.features(x, sample), self.features(y, sample))

    def distance_between(self, features_a: Features, features_b: Features) -> torch.Tensor:
        """Distances from two feature sets (leading dims broadcast), e.g. ``[G, N]`` vs ``[N]`` -> ``[G, N]``."""
        if self.backbone is None:
            return rms_distance(features_a[0], features_b[0])
        return weighted_distance(features_a, features_b, self.linear_weights, self._fused)

    def adjacent_distances(self, sequence: Features, left: Features | None = None,
                           right: Features | None = None) -> torch.Tensor:
        """Distances of the adjacent pairs in ``left, sequence[0], ..., sequence[G-1], right`` (a path's frames).

        Args:
            sequence: features ``[G, N, ...]`` of ``G`` consecutive groups.
            left, right: features ``[1, N, ...]`` of the neighbours before and after, or ``None``.

        Returns:
            ``[P, N]``, ``P = G - 1`` plus one per neighbour given, in path order; the same values as
            :meth:`distance_between` on shifted slices of the concatenated sequence, with a cheaper backward
            (one gradient tensor per tap, in the taps' own memory layout).
        """
        if self.backbone is None:
            parts = [part for part in (left, sequence, right) if part is not None]
            frames = torch.cat([part[0] for part in parts])
            return rms_distance(frames[1:], frames[:-1])
        return weighted_adjacent_distances(sequence, left, right, self.linear_weights, self._fused)

    # -- everyday calls ----------------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        """The precision the network computes in: its weights' (float32, or float64 after ``.double()``); for the
        weightless ``l2``, float32."""
        weights = next((buffer for buffer in self.buffers() if buffer.is_floating_point()), None)
        return torch.float32 if weights is None else weights.dtype

    def _input_dtype(self, images: torch.Tensor) -> torch.dtype:
        """Network metrics compute in :attr:`dtype`; ``l2`` keeps float32/float64 inputs as they are."""
        if self.backbone is None and images.dtype in (torch.float32, torch.float64):
            return images.dtype
        return self.dtype

    def _checked(self, images: torch.Tensor, name: str) -> torch.Tensor:
        """Checked inputs on the metric's device and in its precision (float16, bfloat16 and float64 inputs are
        converted; gradients flow back in the input's dtype). Under autocast the network still runs in the
        autocast precision."""
        check_images(images, name, self.min_size)
        return images.to(device=self.device, dtype=self._input_dtype(images))

    def images_per_pass(self, height: int, width: int, dtype: torch.dtype = torch.float32) -> int:
        """How many ``height x width`` images one network pass may take within the memory budget (at least 1),
        counting the ensemble's offset padding (7 pixels by default; none in crop mode)."""
        budget = self._memory_budget()
        pad = 0 if self.ensemble.crop else self.ensemble.padding
        element_size = torch.empty((), dtype=dtype).element_size()
        return images_per_pass(budget, self.config.backbone, (height + pad) * (width + pad), element_size)

    def _memory_budget(self) -> int:
        return default_memory_budget(self.device) if self.memory_budget is None else self.memory_budget

    def _tiles_needed(self, *inputs: torch.Tensor) -> bool:
        """Whether one pair is over the memory budget, so that it is evaluated tile by tile (no-grad calls only:
        a differentiable call runs whole and its memory is the caller's choice)."""
        if self.backbone is None or self.images_per_pass(*inputs[0].shape[-2:], inputs[0].dtype) >= 2:
            return False
        return not (torch.is_grad_enabled() and any(tensor.requires_grad for tensor in inputs))

    def _tiled_pair_distance(self, x: torch.Tensor, y: torch.Tensor, transform: TransformRecord | None,
                             masks: DropoutMasks | None) -> torch.Tensor:
        """The 0-dim distance of one pair ``[1, 3, H, W]`` under one transform, evaluated tile by tile."""
        flat, _, _, _ = self._network_input(torch.stack([x, y]), EnsembleSample(transform, None))
        block_masks = None if masks is None else BlockDropoutMasks(masks.seed, masks.keep_probability)
        core = core_size(self._memory_budget(), self.config.backbone, x.element_size())
        return tiled_distance(self.backbone, flat, self.linear_weights, lambda tap: _normalized(tap, self._fused),
                              block_masks, core).to(x.dtype)

    def _tiled_rows(self, total: int, height: int, width: int, generator: torch.Generator | None,
                    dropout: bool | None):
        """``(row, transform, masks)`` for each of ``total`` rows of one stratified sample (each row its own
        mask seed), or ``(row, None, None)`` for a deterministic metric."""
        if not self.is_stochastic:
            return [(row, None, None) for row in range(total)]
        sample = self.sample(total, height, width, generator, dropout)
        generator = self.generator if generator is None else generator
        rows = []
        for row in range(total):
            masks = sample.dropout if row == 0 or sample.dropout is None else self._dropout_masks(generator, True)
            rows.append((row, None if sample.transform is None else sample.transform.rows(row, row + 1), masks))
        return rows

    def _tiled_sample_distances(self, x: torch.Tensor, y: torch.Tensor, n: int, generator: torch.Generator | None,
                                dropout: bool | None) -> torch.Tensor:
        """:meth:`sample_distances` for pairs over the memory budget: one pair and sample at a time, tiled."""
        batch, _, height, width = x.shape
        samples = n if self.is_stochastic else 1
        distances = [self._tiled_pair_distance(x[row % batch:][:1], y[row % batch:][:1], transform, masks)
                     for row, transform, masks in self._tiled_rows(samples * batch, height, width, generator,
                                                                   dropout)]
        return torch.stack(distances).reshape(samples, batch).expand(n, batch)

    def _pass_sample(self, sample: EnsembleSample, start: int, stop: int,
                     generator: torch.Generator) -> EnsembleSample:
        """The part of ``sample`` for rows ``start..stop-1``: the first pass keeps the sample's own dropout
        masks, later passes draw fresh ones (masks are drawn per pass shape), or none where the sample has none."""
        rows = None if sample.transform is None else sample.transform.rows(start, stop)
        if start == 0 or sample.dropout is None:
            return EnsembleSample(rows, sample.dropout)
        return EnsembleSample(rows, self._dropout_masks(generator, True))

    def sample_distances(self, x: torch.Tensor, y: torch.Tensor, n: int = 1,
                         generator: torch.Generator | None = None, dropout: bool | None = None) -> torch.Tensor:
        """``[n, N]`` distances of ``n`` ensemble samples (one stratified record for ``n * N`` images, evaluated
        in passes of at most :meth:`images_per_pass` pairs); unchecked inputs."""
        batch, _, height, width = x.shape
        per_pass = max(1, self.images_per_pass(height, width, x.dtype) // 2)  # x and y share a pass
        if self._tiles_needed(x, y):
            return self._tiled_sample_distances(x, y, n, generator, dropout)
        if not self.is_stochastic:
            distances = torch.cat([self._pair_distances(x[start:stop], y[start:stop], None)
                                   for start, stop in _passes(batch, per_pass)])
            return distances.unsqueeze(0).expand(n, batch)
        total = n * batch
        sample = self.sample(total, height, width, generator, dropout)
        if total <= per_pass:
            return self._pair_distances(x.repeat(n, 1, 1, 1), y.repeat(n, 1, 1, 1), sample).reshape(n, batch)
        generator = self.generator if generator is None else generator
        distances = []
        for start, stop in _passes(total, per_pass):
            rows = torch.arange(start, stop, device=x.device) % batch
            part = self._pass_sample(sample, start, stop, generator)
            distances.append(self._pair_distances(x[rows], y[rows], part))
        return torch.cat(distances).reshape(n, batch)

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        n: int = 1,
        transform: TransformRecord | None = None,
        dropout: bool | None = None,
        generator: torch.Generator | None = None,
        *,
        reduction: Reduction | None = None,
    ) -> torch.Tensor:
        """Distance between image ``i`` of ``x`` and image ``i`` of ``y``.

        Args:
            x, y: float ``[N, 3, H, W]`` in [0, 1] (checked; on any device, moved to the metric's);
                differentiable with respect to both.
            n: number of ensemble samples averaged (E-LPIPS; LPIPS and L2 are deterministic).
            transform: evaluate one fixed ensemble sample (a record for ``N`` images) instead of random ones.
            dropout: override dropout (``False`` with ``transform`` gives a deterministic evaluation).
            generator: CPU generator for the sampling (default: the metric's own, seeded by ``seed``).
            reduction: ``"none"`` / ``"mean"`` / ``"sum"`` for this call (default: the constructor's).

        Returns:
            ``[N]`` distances (mean of ``n`` samples), float32 (float64 for a ``.double()`` metric); a scalar
            (their mean or sum) with ``reduction="mean"`` / ``"sum"``. Distances are non-negative, 0 for equal
            images.
        """
        reduction = self.reduction if reduction is None else _check_reduction(reduction)
        _check_sample_count(n)
        x = self._checked(x, "x")
        y = self._checked(y, "y")
        check_same_shape(x, y)
        if transform is None or not self.is_stochastic:
            return _reduce(self.sample_distances(x, y, n, generator, dropout).mean(dim=0), reduction)
        if n != 1:
            raise ValueError("a fixed transform is one sample: use n=1")
        self._check_scaled_size(*x.shape[-2:], transform.scale_level, transform.ensemble)
        sample = self.sample_for(transform, dropout, generator)
        return _reduce(self._pair_distances(x, y, sample), reduction)

    def _stack_candidates(self, reference: torch.Tensor, candidates: torch.Tensor | Sequence[torch.Tensor]):
        if isinstance(candidates, torch.Tensor) and candidates.dim() == 5:
            candidates = list(candidates.unbind(0))
        if len(candidates) == 0:
            raise ValueError("compare needs at least one candidate")
        checked = []
        for index, candidate in enumerate(candidates):
            candidate = self._checked(candidate, f"candidate {index}")
            check_same_shape(reference, candidate, "reference", f"candidate {index}")
            checked.append(candidate)
        return torch.stack(checked)

    def compare_samples(self, reference: torch.Tensor, candidates: torch.Tensor, n: int = 1,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """``[n, M, N]`` sample distances from ``reference`` ``[N,3,H,W]`` to ``candidates`` ``[M,N,3,H,W]``;
        every sample shared by all candidates. Unchecked inputs. Evaluated in passes within the memory budget:
        rows of the stratified sample, and within a row range groups of candidates against the reference's
        features computed once."""
        count, batch, _, height, width = candidates.shape
        total = n * batch
        capacity = self.images_per_pass(height, width, candidates.dtype)
        if self._tiles_needed(reference, candidates):
            return self._tiled_compare_samples(reference, candidates, n, generator)
        sample = self.sample(total, height, width, generator)
        if total * (count + 1) <= capacity:
            return self._compare_pass(reference.repeat(n, 1, 1, 1), candidates.repeat(1, n, 1, 1, 1),
                                      sample).reshape(count, n, batch).transpose(0, 1)
        generator = self.generator if generator is None else generator
        rows_per_pass = max(1, min(total, capacity // 2))
        columns = []
        for start, stop in _passes(total, rows_per_pass):
            rows = torch.arange(start, stop, device=reference.device) % batch
            part = self._pass_sample(sample, start, stop, generator) if self.is_stochastic else sample
            groups_per_pass = max(1, capacity // (stop - start) - 1)
            if self._checkpointing(reference, candidates):
                columns.append(torch.cat([self._compare_pass(reference[rows], candidates[first:last][:, rows], part)
                                          for first, last in _passes(count, groups_per_pass)]))
                continue
            reference_features = self.features(reference[rows], part)
            columns.append(torch.cat([
                self.distance_between(self.features(candidates[first:last][:, rows], part), reference_features)
                for first, last in _passes(count, groups_per_pass)]))
        return torch.cat(columns, dim=1).reshape(count, n, batch).transpose(0, 1)

    def _tiled_compare_samples(self, reference: torch.Tensor, candidates: torch.Tensor, n: int,
                               generator: torch.Generator | None) -> torch.Tensor:
        """:meth:`compare_samples` for images over the memory budget: every candidate against the reference, one
        sample row at a time, tiled, all candidates under the row's transform and masks."""
        count, batch, _, height, width = candidates.shape
        samples = n if self.is_stochastic else 1
        rows = []
        for row, transform, masks in self._tiled_rows(samples * batch, height, width, generator, None):
            image = row % batch
            rows.append(torch.stack([
                self._tiled_pair_distance(candidates[m, image:image + 1], reference[image:image + 1], transform, masks)
                for m in range(count)]))
        distances = torch.stack(rows, dim=1).reshape(count, samples, batch)  # [M, samples, N]
        return distances.transpose(0, 1).expand(n, count, batch)

    def _compare_pass(self, reference: torch.Tensor, candidates: torch.Tensor,
                      sample: EnsembleSample) -> torch.Tensor:
        """``[M, B]`` distances of ``candidates`` ``[M, B, 3, H, W]`` to ``reference`` ``[B, 3, H, W]`` in one pass."""
        if self._checkpointing(reference, candidates):
            return self._checkpointed_distances(candidates, reference, sample)
        return self.distance_between(self.features(candidates, sample), self.features(reference, sample))

    def compare(self, reference: torch.Tensor, candidates: torch.Tensor | Sequence[torch.Tensor], n: int = 1,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Distances from ``reference`` to each candidate, with every ensemble sample (transform and dropout)
        shared by all candidates, so differences between candidates have low variance.

        Args:
            reference: ``[N, 3, H, W]`` in [0, 1].
            candidates: a sequence of ``M`` tensors ``[N, 3, H, W]`` or one ``[M, N, 3, H, W]`` tensor.
            n: ensemble samples averaged.

        Returns:
            ``[M, N]``: row ``m`` is the distance tensor of candidate ``m``.
        """
        _check_sample_count(n)
        reference = self._checked(reference, "reference")
        stacked = self._stack_candidates(reference, candidates)
        return self.compare_samples(reference, stacked, n, generator).mean(dim=0)

    def spatial(self, x: torch.Tensor, y: torch.Tensor, n: int = 1, transform: TransformRecord | None = None,
                dropout: bool | None = None, generator: torch.Generator | None = None,
                chunk_size: int | None = None) -> torch.Tensor:
        """Where ``x`` and ``y`` differ: a per-pixel distance map ``[N, 1, H, W]`` in the input's frame.

        LPIPS: the ``lpips`` package's ``spatial=True`` map. E-LPIPS: each sample's tap maps brought back from
        the transformed frame and averaged over ``n`` samples; the map's pixel mean is the E-LPIPS distance at
        the same samples (rule and border behaviour: ``docs/algorithm.md#maps``). Arguments as in :meth:`forward`;
        ``chunk_size``: samples per network pass (memory; the result does not depend on it). Differentiable.
        :func:`elpips.spatial.distance_map` also returns per-pixel uncertainties and the sample distances.
        """
        from .spatial import distance_map

        return distance_map(self, x, y, n, generator, chunk_size, transform, dropout).map

    def compare_spatial(self, reference: torch.Tensor, candidates: torch.Tensor | Sequence[torch.Tensor],
                        n: int = 1, generator: torch.Generator | None = None,
                        chunk_size: int | None = None) -> torch.Tensor:
        """:meth:`spatial` of every candidate against ``reference`` with shared ensemble samples (as
        :meth:`compare`): ``[M, N, 1, H, W]``."""
        from .spatial import compare_maps

        return compare_maps(self, reference, candidates, n, generator, chunk_size).map

    @torch.no_grad()
    def estimate(self, x: torch.Tensor, y: torch.Tensor, abs_tol: float = 0.01, rel_tol: float = 0.025,
                 max_samples: int = 5000, batch: int = 10, generator: torch.Generator | None = None,
                 progress=None) -> Estimate:
        """Sample until the 95% half-width is below ``abs_tol`` and ``rel_tol * mean`` (or ``max_samples``).

        Returns an :class:`~elpips.Estimate` with ``mean`` and ``half_width`` ``[N]`` and the samples used.
        Deterministic metrics return after one evaluation with half-width 0.
        """
        x = self._checked(x, "x")
        y = self._checked(y, "y")
        check_same_shape(x, y)
        if not self.is_stochastic:
            distances = self.sample_distances(x, y, 1).double()
            return Estimate(distances[0], torch.zeros_like(distances[0]), 1, distances)
        return sequential_estimate(lambda k: self.sample_distances(x, y, k, generator), abs_tol, rel_tol,
                                   max_samples, batch, progress)

    @torch.no_grad()
    def estimate_compare(self, reference: torch.Tensor, candidates, abs_tol: float = 0.01, rel_tol: float = 0.025,
                         max_samples: int = 5000, batch: int = 10, generator: torch.Generator | None = None,
                         progress=None) -> Estimate:
        """:meth:`estimate` for :meth:`compare`: ``mean``/``half_width`` ``[M, N]``, samples shared."""
        reference = self._checked(reference, "reference")
        stacked = self._stack_candidates(reference, candidates)
        if not self.is_stochastic:
            distances = self.compare_samples(reference, stacked, 1).double()
            return Estimate(distances[0], torch.zeros_like(distances[0]), 1, distances)
        return sequential_estimate(lambda k: self.compare_samples(reference, stacked, k, generator), abs_tol,
                                   rel_tol, max_samples, batch, progress)
