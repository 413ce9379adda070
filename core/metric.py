"""``elpips.Metric``: E-LPIPS, LPIPS and L2 behind one call, ``Metric("elpips-vgg")(x, y)``.

Two layers of API:

* The everyday calls: ``metric(x, y, n)``, ``metric.compare(reference, candidates, n)``,
  ``metric.estimate(x, y)``. Inputs are float ``[N, 3, H, W]`` in ``[0, 1]``, checked on entry.
* The solver layer (no input checks, no copies): ``sample = metric.sample(N, H, W)`` draws one ensemble sample
  (transform + dropout masks), ``metric.features(images, sample)`` computes normalised taps for any number of
  image groups under that sample, and ``metric.distance_between(fa, fb)`` turns two feature sets into
  distances. Features of images that do not require grad are computed without a graph, so a solver can
  compute references once and compare them with its variables at the cost of one forward pass each.

The machinery lives in ``_inputs`` (argument checks, shared with :mod:`elpips.spatial`), ``_features`` (backbone,
network input, normalised taps) and ``_passes`` (passes within the memory budget, tiles, checkpointing).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import _passes
from ._features import (
    CHANNELS_LAST_DEVICES,  # noqa: F401  (kept importable from here)
    Features,
    build_network,
    draw_transform,
    dropout_masks,
    lay_out_backbone,
    network_features,
    network_layout,
)
from ._inputs import (  # noqa: F401  (kept importable from here)
    REDUCTIONS,
    SEED_LIMIT,
    Reduction,
    check_fixed_transform,
    check_memory_budget,
    check_reduction,
    check_sample_count,
    checked_images,
    reduce,
    resolve_ensemble,
    seeded_generator,
    stack_candidates,
)
from .backbones.common import StagedBackbone
from .configs import get_config
from .devices import resolve_device
from .distance import rms_distance, weighted_adjacent_distances, weighted_distance
from .dropout import DropoutMasks
from .ensemble import EnsembleConfig
from .estimate import Estimate, estimate_distances
from .precision import check_precision, resolve_precision
from .record import tensor_digest
from .spatial import compare_maps, distance_map
from .transforms import TransformRecord
from .validation import check_same_shape
from .weights import WeightsInfo


@dataclass
class EnsembleSample:
    """One draw of the ensemble: the input transformation and the dropout masks (``None`` where unused)."""

    transform: TransformRecord | None
    dropout: DropoutMasks | None


class Metric(nn.Module):
    """A perceptual distance: E-LPIPS (``elpips-vgg``, ``elpips-squeeze``), LPIPS (``lpips-vgg``,
    ``lpips-squeeze``, ``lpips-alex``) or plain RMS (``l2``).

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
        scale_levels: shortcut for the ensemble's ``scale_levels`` (``None``: ``clamp(min(H, W) // 64, 1, 8)`` per
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

        precision: keyword-only; the arithmetic of the network: ``"float32"`` (default), ``"bfloat16"``,
            ``"float16"`` (CUDA only; ``ValueError`` elsewhere) or ``"auto"`` (bfloat16 where the hardware has it
            natively: AVX-512 BF16 / AMX CPUs, CUDA compute capability 8.0 and above; float32 elsewhere). The
            convolutions, pooling and dropout run in it; the normalisation, tap distances, linear weights' sums and
            reductions stay float32; inputs' gradients keep their dtype. :attr:`precision` and :meth:`identity`
            give the precision actually used. Accuracy and speed: docs/performance.md#precision.

    A caller's own autocast (``torch.autocast``) also runs a float32 metric's network in low precision (the
    normalisation and distances stay float32; the result is float32), but its record still says float32: prefer
    ``precision=``. Under ``DistributedDataParallel`` wrap
    only the trainable model, compute the metric on its output on every rank (give each rank its own ``seed``
    for independent ensemble samples). ``torch.compile`` of a training step that calls the metric runs, but
    the data-dependent input checks, the per-call transform sampling (its random scale changes shapes) and the
    dropout-mask cache split it into many graphs and cause recompilations: on the CPU it compiled for over a
    minute and then ran slower than eager mode. Compile the model, not the metric.

    Examples:
        >>> import torch, elpips
        >>> metric = elpips.Metric("elpips-vgg", backbone_weights="random", seed=0)   # random: offline, uncalibrated
        >>> x, y = torch.rand(2, 1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        >>> d = metric(x, y, n=2)                  # mean of 2 ensemble samples, differentiable in x and y
        >>> d.shape, bool(d > 0)
        (torch.Size([1]), True)
    """

    backbone: StagedBackbone | None  # set by build_network, with the two below
    weights_info: WeightsInfo
    linear_weights_source: str

    def __init__(
        self,
        name: str = "elpips-vgg",
        backbone_weights: str | os.PathLike = "imagenet",
        linear_weights: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        seed: int | None = None,
        scale_levels: int | None = None,
        dropout_keep: float | None = None,
        reduction: Reduction = "none",
        checkpoint_activations: bool = False,
        channels_last: bool | None = None,
        higher_order_gradients: bool = False,
        memory_budget: int | None = None,
        ensemble: EnsembleConfig | None = None,
        *,
        precision: str = "float32",
    ) -> None:
        super().__init__()
        self.config = get_config(name)
        self.ensemble = resolve_ensemble(self.config, ensemble, scale_levels, dropout_keep)
        self.reduction = check_reduction(reduction)
        self.generator = seeded_generator(seed)
        self.checkpoint_activations = bool(checkpoint_activations)
        self.channels_last = None if channels_last is None else bool(channels_last)
        self.higher_order_gradients = bool(higher_order_gradients)
        self.memory_budget = check_memory_budget(memory_budget)
        self.requested_precision = check_precision(precision)
        build_network(self, backbone_weights, linear_weights)
        self.requires_grad_(False)
        self.eval()
        self.to(resolve_device(device))
        self.precision  # noqa: B018  (float16 off CUDA is refused here, not at the first call)
        if self.backbone is not None:
            lay_out_backbone(self.backbone, self.memory_format(self.device))

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
    def precision(self) -> str:
        """The precision the network runs in on the metric's current device: ``"float32"``, ``"bfloat16"`` or
        ``"float16"`` (``precision="auto"`` resolved: :func:`elpips.precision.resolve_precision`). The weightless
        ``l2`` is always float32."""
        if self.backbone is None:
            return "float32"
        return resolve_precision(self.requested_precision, self.device)

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
    def scale_levels(self) -> int | None:
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
        ``precision`` (the one the network runs in, ``"auto"`` resolved)."""
        return {"name": self.name, "backbone_weights": self.weights_info.spec,
                "linear_weights": self.linear_weights_source,
                "weights_sha256": tensor_digest(self.state_dict().values()),
                "ensemble": self.ensemble.as_dict(), "precision": self.precision}

    def extra_repr(self) -> str:
        extra = f", reduction={self.reduction!r}" if self.reduction != "none" else ""
        extra += ", checkpoint_activations=True" if self.checkpoint_activations else ""
        extra += f", channels_last={self.channels_last}" if self.channels_last is not None else ""
        extra += ", higher_order_gradients=True" if self.higher_order_gradients else ""
        if self.requested_precision != "float32":
            extra += f", precision={self.requested_precision!r}"
            extra += f" ({self.precision})" if self.requested_precision == "auto" else ""
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
        record = draw_transform(self, batch, height, width, generator)  # first: the transform, then the masks
        return EnsembleSample(record, dropout_masks(self, generator, dropout))

    def sample_for(self, transform: TransformRecord | None, dropout: bool | None = None,
                   generator: torch.Generator | None = None) -> EnsembleSample:
        """An :class:`EnsembleSample` with a given transform (fresh dropout masks unless ``dropout=False``)."""
        generator = self.generator if generator is None else generator
        return EnsembleSample(transform, dropout_masks(self, generator, dropout))

    def features(self, images: torch.Tensor, sample: EnsembleSample | None = None) -> Features:
        """Normalised taps of ``images`` under ``sample``.

        Args:
            images: ``[N, 3, H, W]`` or ``[G, N, 3, H, W]`` in [0, 1] on this metric's device (not checked).
                All ``G`` groups get the same transform and dropout masks.
            sample: from :meth:`sample`; required for E-LPIPS, ignored by LPIPS and L2.

        Returns:
            One tensor per tap, ``[(G,) N, C, h, w]``, float32 (also under autocast; float64 for a float64 metric).
        """
        return network_features(self, images, sample)

    def memory_format(self, device: torch.device) -> torch.memory_format:
        """The layout the network runs in on ``device`` (see the ``channels_last`` argument)."""
        return network_layout(self.channels_last, device)

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

    def images_per_pass(self, height: int, width: int, dtype: torch.dtype = torch.float32) -> int:
        """How many ``height x width`` images one network pass may take within the memory budget (at least 1),
        counting the ensemble's offset padding (7 pixels by default; none in crop mode)."""
        return _passes.pass_capacity(self, height, width, dtype)

    def sample_distances(self, x: torch.Tensor, y: torch.Tensor, n: int = 1,
                         generator: torch.Generator | None = None, dropout: bool | None = None) -> torch.Tensor:
        """``[n, N]`` distances of ``n`` ensemble samples (one stratified record for ``n * N`` images, evaluated
        in passes of at most :meth:`images_per_pass` pairs); unchecked inputs."""
        return _passes.sample_distances(self, x, y, n, generator, dropout)

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
        reduction = self.reduction if reduction is None else check_reduction(reduction)
        check_sample_count(n)
        x = checked_images(self, x, "x")
        y = checked_images(self, y, "y")
        check_same_shape(x, y)
        if transform is None or not self.is_stochastic:
            return reduce(self.sample_distances(x, y, n, generator, dropout).mean(dim=0), reduction)
        check_fixed_transform(self, transform, n, *x.shape[-2:])
        sample = self.sample_for(transform, dropout, generator)
        return reduce(_passes.pair_distances(self, x, y, sample), reduction)

    def compare_samples(self, reference: torch.Tensor, candidates: torch.Tensor, n: int = 1,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """``[n, M, N]`` sample distances from ``reference`` ``[N,3,H,W]`` to ``candidates`` ``[M,N,3,H,W]``;
        every sample shared by all candidates. Unchecked inputs. Evaluated in passes within the memory budget:
        rows of the stratified sample, and within a row range groups of candidates against the reference's
        features computed once."""
        return _passes.compare_samples(self, reference, candidates, n, generator)

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

        Examples:
            >>> import torch, elpips
            >>> metric = elpips.Metric("elpips-vgg", backbone_weights="random", seed=0)
            >>> ref, a, b = torch.rand(3, 1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
            >>> metric.compare(ref, [a, b, ref], n=2).shape     # [M, N]: every sample shared by the candidates
            torch.Size([3, 1])
        """
        check_sample_count(n)
        reference = checked_images(self, reference, "reference")
        stacked = stack_candidates(self, reference, candidates)
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
        return distance_map(self, x, y, n, generator, chunk_size, transform, dropout).map

    def compare_spatial(self, reference: torch.Tensor, candidates: torch.Tensor | Sequence[torch.Tensor],
                        n: int = 1, generator: torch.Generator | None = None,
                        chunk_size: int | None = None) -> torch.Tensor:
        """:meth:`spatial` of every candidate against ``reference`` with shared ensemble samples (as
        :meth:`compare`): ``[M, N, 1, H, W]``."""
        return compare_maps(self, reference, candidates, n, generator, chunk_size).map

    @torch.no_grad()
    def estimate(self, x: torch.Tensor, y: torch.Tensor, abs_tol: float = 0.01, rel_tol: float = 0.025,
                 max_samples: int = 5000, batch: int = 10, generator: torch.Generator | None = None,
                 progress=None) -> Estimate:
        """Sample until the 95% half-width is below ``abs_tol`` and ``rel_tol * mean`` (or ``max_samples``).

        Returns an :class:`~elpips.Estimate` with ``mean`` and ``half_width`` ``[N]`` and the samples used.
        Deterministic metrics return after one evaluation with half-width 0. ``progress=True`` prints a plain line
        on stderr every 10 s (samples so far, mean, half-width); a callable gets the running estimate per batch.

        Examples:
            >>> import torch, elpips
            >>> metric = elpips.Metric("elpips-vgg", backbone_weights="random", seed=0)
            >>> x, y = torch.rand(2, 1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
            >>> est = metric.estimate(x, y, max_samples=20)     # stops at 20 samples or at the tolerances
            >>> est.samples <= 20, est.mean.shape == est.half_width.shape
            (True, True)
        """
        x = checked_images(self, x, "x")
        y = checked_images(self, y, "y")
        check_same_shape(x, y)
        return estimate_distances(lambda k: self.sample_distances(x, y, k, generator), self.is_stochastic, abs_tol,
                                  rel_tol, max_samples, batch, progress)

    @torch.no_grad()
    def estimate_compare(self, reference: torch.Tensor, candidates, abs_tol: float = 0.01, rel_tol: float = 0.025,
                         max_samples: int = 5000, batch: int = 10, generator: torch.Generator | None = None,
                         progress=None) -> Estimate:
        """:meth:`estimate` for :meth:`compare`: ``mean``/``half_width`` ``[M, N]``, samples shared."""
        reference = checked_images(self, reference, "reference")
        stacked = stack_candidates(self, reference, candidates)
        return estimate_distances(lambda k: self.compare_samples(reference, stacked, k, generator),
                                  self.is_stochastic, abs_tol, rel_tol, max_samples, batch, progress)
