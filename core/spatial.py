"""Spatial distance maps: where two images differ, per pixel, in the input's frame (rule: ``docs/algorithm.md#maps``).

The functional core:

* :func:`tap_difference_map`: one tap's per-location weighted squared difference ``sum_c w_c (a_c - b_c)^2``
  (its pixel mean is the tap's distance).
* :func:`upsample_bilinear` (LPIPS, as the ``lpips`` package's ``spatial=True``) and
  :func:`upsample_mass_preserving` (E-LPIPS: bilinear with per-row/column weights that keep the mean exact)
  bring a tap's map to the frame the network saw.
* :func:`map_to_input_frame`: the adjoint of one :class:`~elpips.transforms.TransformRecord`'s pixel operator
  (swap, flips, offset window and its reflect padding, box downscale and its reflect padding), scaled so that the
  map's mean is kept: every pixel the network saw hands its value back to the input pixels it was made from.

:func:`compare_maps` and :func:`distance_map` average the per-sample maps over ``n`` ensemble samples, processed
in chunks of samples so that memory does not grow with ``n``; every sample's dropout masks are drawn on their
own, so the result does not depend on the chunk size. ``Metric.spatial`` and ``Metric.compare_spatial`` are thin
wrappers.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F

from ._features import dropout_enabled
from ._inputs import check_fixed_transform, check_sample_count, checked_images, stack_candidates
from .dropout import DropoutMasks
from .ensemble import DEFAULT_MAX_OFFSET
from .estimate import Z_95
from .transforms import (
    FLIP_BOTH,
    FLIP_LEFT_RIGHT,
    FLIP_UP_DOWN,
    TransformRecord,
    identity_transform,
    scaled_size,
    transformed_size,
)
from .validation import check_same_shape

if TYPE_CHECKING:
    from .metric import Metric


@dataclass
class SpatialMaps:
    """Distance maps averaged over ensemble samples.

    Attributes:
        map: ``[..., N, 1, H, W]`` mean over the samples, non-negative; its pixel mean equals the mean of
            ``distances`` over the samples for E-LPIPS (see ``docs/algorithm.md#maps`` for LPIPS).
        half_width: same shape: the 95% half-width of every pixel's mean (0 for one sample or a deterministic
            metric); samples of one stratified batch are not independent, which makes it conservative.
        distances: ``[n, ..., N]`` the scalar distance of every sample, from the same features.
        samples: ``n`` (1 for LPIPS).
    """

    map: torch.Tensor
    half_width: torch.Tensor
    distances: torch.Tensor
    samples: int


# -- per-tap maps and upsampling -----------------------------------------------------------------------------------
def tap_difference_map(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``sum_c w_c (a_c - b_c)^2`` of normalised taps ``[..., C, h, w]`` (leading dims broadcast), ``weight``
    ``[C]``: ``[..., 1, h, w]``, non-negative where ``w >= 0``. Its mean over ``h, w`` is ``tap_distance``."""
    with torch.autocast(device_type=a.device.type, enabled=False):
        diff = a - b
        return (diff.square() * weight.to(diff.dtype)[:, None, None]).sum(dim=-3, keepdim=True)


def _as_4d(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
    return maps.reshape(-1, 1, *maps.shape[-2:]), maps.shape[:-2]


def upsample_bilinear(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[..., 1, h, w]`` -> ``[..., 1, H, W]`` by bilinear interpolation with ``align_corners=False`` (the
    ``lpips`` package's ``nn.Upsample`` for ``spatial=True``)."""
    flat, leading = _as_4d(maps)
    if tuple(flat.shape[-2:]) != tuple(size):
        flat = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return flat.reshape(*leading, *size)


@functools.lru_cache(maxsize=256)
def _spread(source: int, target: int) -> torch.Tensor:
    """``[source]`` float64: the total weight each source sample gets in a linear ``align_corners=False``
    interpolation from ``source`` to ``target`` samples (``target / source`` everywhere when it keeps the mass)."""
    basis = torch.eye(source, dtype=torch.float64)[:, None, :]
    return F.interpolate(basis, size=target, mode="linear", align_corners=False).sum(dim=-1).flatten()


def upsampling_mass(source: tuple[int, int], target: tuple[int, int]) -> torch.Tensor:
    """``[h, w]`` float64 factors ``k``: the mean of :func:`upsample_bilinear` of a map ``D`` from ``source``
    ``(h, w)`` to ``target`` is ``mean(k * D)``. ``k == 1`` everywhere when the sizes divide evenly; otherwise
    the mean lies between ``k.min()`` and ``k.max()`` times ``mean(D)`` (``D >= 0``)."""
    (h, w), (height, width) = source, target
    return torch.outer(_spread(h, height) * (h / height), _spread(w, width) * (w / width))


def upsample_mass_preserving(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling (as :func:`upsample_bilinear`) of ``maps`` divided by :func:`upsampling_mass`, so that
    the mean over ``size`` equals the mean of ``maps`` exactly (each source row/column spreads its own share)."""
    mass = upsampling_mass((maps.shape[-2], maps.shape[-1]), (size[0], size[1]))
    mass = mass.to(device=maps.device, dtype=maps.dtype)
    return upsample_bilinear(maps / mass, size)


# -- the inverse of one transform record for maps ----------------------------------------------------------------
def _fold_reflect(maps: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Adjoint of ``F.pad(..., (left, right, top, bottom), mode="reflect")`` on ``[..., H+top+bottom,
    W+left+right]``: the window is kept and every padded pixel's value is added onto the pixel it copies."""
    height = maps.shape[-2] - top - bottom
    rows = maps[..., top:top + height, :].clone()
    if top:
        rows[..., 1:top + 1, :] += maps[..., :top, :].flip(-2)
    if bottom:
        rows[..., height - 1 - bottom:height - 1, :] += maps[..., top + height:, :].flip(-2)
    width = rows.shape[-1] - left - right
    out = rows[..., left:left + width].clone()
    if left:
        out[..., 1:left + 1] += rows[..., :left].flip(-1)
    if right:
        out[..., width - 1 - right:width - 1] += rows[..., left + width:].flip(-1)
    return out


def _place_windows(maps: torch.Tensor, offset: torch.Tensor, height: int, width: int,
                   padding: int = DEFAULT_MAX_OFFSET) -> torch.Tensor:
    """Put each image's ``[h+M, w+M]`` window at rows ``dy..``, columns ``dx..`` of a zero ``[h+2M, w+2M]``
    canvas (the adjoint of the offset crop; ``M`` = ``padding``, 7 by default). ``maps``:
    ``[..., N, 1, h+M, w+M]``; ``offset``: ``[N, 2]``."""
    batch = maps.shape[-4]
    rows = (offset[:, 0, None] + torch.arange(height + padding, device=maps.device)).view(batch, 1, -1, 1)
    canvas = maps.new_zeros(*maps.shape[:-2], height + 2 * padding, maps.shape[-1])
    canvas = canvas.scatter_add(-2, rows.expand_as(maps), maps)
    cols = (offset[:, 1, None] + torch.arange(width + padding, device=maps.device)).view(batch, 1, 1, -1)
    full = canvas.new_zeros(*canvas.shape[:-1], width + 2 * padding)
    return full.scatter_add(-1, cols.expand_as(canvas), canvas)


def _unflip(maps: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Undo each image's flip code on ``[..., N, 1, h, w]`` (a flip is its own inverse)."""
    view = (-1, 1, 1, 1)
    up_down = ((flip == FLIP_UP_DOWN) | (flip == FLIP_BOTH)).view(view)
    left_right = ((flip == FLIP_LEFT_RIGHT) | (flip == FLIP_BOTH)).view(view)
    maps = torch.where(up_down, maps.flip(-2), maps)
    return torch.where(left_right, maps.flip(-1), maps)


def _unscale(maps: torch.Tensor, level: int, offset: tuple[int, int], height: int, width: int) -> torch.Tensor:
    """Adjoint of the box downscale by ``level`` after reflect padding (top/left ``offset``): each value is
    shared equally by the ``level x level`` block it averaged, then the padding is folded back."""
    if level == 1:
        return maps
    blocks = maps.repeat_interleave(level, dim=-2).repeat_interleave(level, dim=-1) / (level * level)
    oy, ox = offset
    return _fold_reflect(blocks, oy, blocks.shape[-2] - height - oy, ox, blocks.shape[-1] - width - ox)


def _unshift(maps: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Undo the tileable mode's circular shifts on ``[..., N, 1, h, w]``: pixel ``p`` gets ``maps[(p - d) mod h]``."""
    batch, height, width = maps.shape[-4], maps.shape[-2], maps.shape[-1]
    rows = (torch.arange(height, device=maps.device)[None, :] - offset[:, 0, None]) % height
    maps = torch.gather(maps, -2, rows.view(batch, 1, height, 1).expand_as(maps))
    cols = (torch.arange(width, device=maps.device)[None, :] - offset[:, 1, None]) % width
    return torch.gather(maps, -1, cols.view(batch, 1, 1, width).expand_as(maps))


def _unscale_wrapped(maps: torch.Tensor, level: int, offset: tuple[int, int], height: int,
                     width: int) -> torch.Tensor:
    """Adjoint of the tileable mode's box downscale: each value is shared equally by its ``level x level`` block,
    and every block pixel is added onto the input pixel it wrapped around to (row ``(r - oy) mod H``)."""
    if level == 1:
        return maps
    blocks = maps.repeat_interleave(level, dim=-2).repeat_interleave(level, dim=-1) / (level * level)
    oy, ox = offset
    rows = (torch.arange(blocks.shape[-2], device=maps.device) - oy) % height
    out = blocks.new_zeros(*blocks.shape[:-2], height, blocks.shape[-1]).index_add(-2, rows, blocks)
    cols = (torch.arange(blocks.shape[-1], device=maps.device) - ox) % width
    return out.new_zeros(*out.shape[:-1], width).index_add(-1, cols, out)


def map_to_input_frame(frame_maps: torch.Tensor, record: TransformRecord, height: int,
                       width: int) -> torch.Tensor:
    """Bring maps from the transformed frame back to the input frame (colour steps do nothing to a map).

    Args:
        frame_maps: ``[..., N, 1, Ht, Wt]`` with ``(Ht, Wt) = transformed_size(height, width, record)``.
        record: the sample's record for ``N`` images.
        height, width: the input size.

    Returns:
        ``[..., N, 1, height, width]``: ``(H W / (Ht Wt)) T^t M`` where ``T`` is the record's linear pixel operator
        (each transformed pixel an average of input pixels): the pixel mean is kept exactly, an interior pixel
        seen once gets its transformed pixel's value times ``H W / (Ht Wt)`` (times ``1/s^2`` per copy at scale
        ``s``, which the factor compensates), border pixels also get their reflected copies' values.
    """
    expected = transformed_size(height, width, record)
    if tuple(frame_maps.shape[-2:]) != expected or frame_maps.shape[-3] != 1:
        raise ValueError(f"frame maps must be [..., N, 1, {expected[0]}, {expected[1]}], "
                         f"got {list(frame_maps.shape)}")
    if record.ensemble.crop:
        raise ValueError("distance maps of the crop-instead-of-pad mode are not supported: use the pad mode")
    padding = record.ensemble.padding
    maps = frame_maps.transpose(-1, -2) if record.swap else frame_maps
    maps = _unflip(maps, record.flip.to(maps.device))
    if record.ensemble.tileable:
        maps = _unshift(maps, record.offset.to(maps.device))
        maps = _unscale_wrapped(maps, record.scale_level, record.scale_offset, height, width)
        return maps * (height * width / (expected[0] * expected[1]))
    scaled_h, scaled_w = scaled_size(height, width, record.scale_level)
    maps = _place_windows(maps, record.offset.to(maps.device), scaled_h, scaled_w, padding)
    maps = _fold_reflect(maps, padding, padding, padding, padding)
    maps = _unscale(maps, record.scale_level, record.scale_offset, height, width)
    return maps * (height * width / (expected[0] * expected[1]))


# -- one ensemble sample, then many ------------------------------------------------------------------------------
class SampleDropout:
    """Dropout masks of consecutive ensemble samples, each drawn by its own :class:`DropoutMasks` for ``N``
    images: a sample's masks do not depend on the chunk it is evaluated in. Called as the network's dropout
    hook ``(inputs [G*k*N, C, h, w], layer, groups) -> masked inputs``."""

    def __init__(self, masks: Sequence[DropoutMasks], batch: int) -> None:
        self.masks = list(masks)
        self.batch = batch

    def __call__(self, inputs: torch.Tensor, layer: int, groups: int) -> torch.Tensor:
        shape = torch.Size((self.batch, *inputs.shape[1:]))
        layout = (torch.channels_last if inputs.is_contiguous(memory_format=torch.channels_last)
                  else torch.contiguous_format)
        parts = [masks.mask(layer, shape, inputs.device, inputs.dtype, layout) for masks in self.masks]
        mask = torch.cat(parts).contiguous(memory_format=layout)
        grouped = inputs.reshape(groups, *mask.shape) * mask
        return grouped.reshape(inputs.shape)


def sample_maps(metric: Metric, reference: torch.Tensor, candidates: torch.Tensor,
                sample=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps and distances of one network pass: ``candidates`` ``[M, B, 3, H, W]`` against ``reference``
    ``[B, 3, H, W]`` under ``sample`` (an :class:`~elpips.EnsembleSample` for ``B`` images; ``None`` for LPIPS).

    Returns:
        ``([M, B, 1, H, W] maps, [M, B] distances)``; the maps' pixel mean equals the distances for E-LPIPS.
    """
    height, width = reference.shape[-2:]
    features = metric.features(torch.cat([candidates, reference.unsqueeze(0)]), sample)
    ensemble = sample is not None and sample.transform is not None
    frame = transformed_size(height, width, sample.transform) if ensemble else (height, width)
    upsample = upsample_mass_preserving if ensemble else upsample_bilinear
    total_map = total_distance = None
    for tap, weight in zip(features, metric.linear_weights, strict=False):
        tap_map = tap_difference_map(tap[:-1], tap[-1], weight)  # [M, B, 1, h, w]
        distance = tap_map.mean(dim=(-3, -2, -1))
        frame_map = upsample(tap_map, frame)
        total_map = frame_map if total_map is None else total_map + frame_map
        total_distance = distance if total_distance is None else total_distance + distance
    if total_map is None or total_distance is None:
        raise ValueError(f"{metric.name} has no network taps: spatial maps need an LPIPS or E-LPIPS metric")
    if ensemble:
        total_map = map_to_input_frame(total_map, sample.transform, height, width)
    return total_map, total_distance


def default_chunk_samples(metric: Metric, images: int, height: int, width: int, dtype: torch.dtype) -> int:
    """Samples per network pass: as many as the metric's memory budget allows for ``images`` images per sample
    (:meth:`~elpips.Metric.images_per_pass`), at least one."""
    return max(1, metric.images_per_pass(height, width, dtype) // images)


def _draw_samples(metric: Metric, count: int, batch: int, height: int, width: int,
                  generator: torch.Generator | None, transform: TransformRecord | None,
                  dropout: bool | None) -> tuple[TransformRecord, list[int] | None]:
    """The transform record of ``count`` samples of ``batch`` images (one stratified batch, as
    ``metric(x, y, n)`` draws it) and one dropout seed per sample (``None`` without dropout)."""
    generator = metric.generator if generator is None else generator
    if transform is None:
        record = metric.sample(count * batch, height, width, generator, dropout=False).transform
        if record is None:  # an ensemble of dropout only: no transformation to undo
            record = identity_transform(count * batch, metric.ensemble)
    else:
        check_fixed_transform(metric, transform, count, height, width)
        if transform.batch_size != batch:
            raise ValueError(f"transform record is for {transform.batch_size} images, batch has {batch}")
        record = transform
    if not dropout_enabled(metric, dropout):
        return record, None
    return record, torch.randint(0, 2**62, (count,), generator=generator).tolist()


def compare_maps(metric: Metric, reference: torch.Tensor, candidates, n: int = 1,
                 generator: torch.Generator | None = None, chunk_size: int | None = None,
                 transform: TransformRecord | None = None, dropout: bool | None = None) -> SpatialMaps:
    """Maps from ``reference`` to each candidate, every ensemble sample shared by all candidates.

    Args:
        metric: an LPIPS or E-LPIPS :class:`~elpips.Metric` (``l2`` has no taps: ``ValueError``).
        reference: ``[N, 3, H, W]`` in [0, 1] (checked).
        candidates: ``M`` tensors ``[N, 3, H, W]`` or one ``[M, N, 3, H, W]``.
        n: ensemble samples averaged (E-LPIPS; LPIPS is deterministic and evaluated once).
        generator: CPU generator of the sampling (default: the metric's).
        chunk_size: samples per network pass (default :func:`default_chunk_samples`, from the metric's memory
            budget); the result does not depend on it. Without autograd, peak memory grows with it, not with
            ``n``. One sample of all images always goes through the network whole (maps are not tiled).
        transform: one fixed sample (``n=1``); ``dropout``: override dropout (as in ``metric(...)``).

    Returns:
        :class:`SpatialMaps` with ``map`` ``[M, N, 1, H, W]`` and ``distances`` ``[n, M, N]``. Differentiable
        with respect to the images (the graph then holds every chunk).
    """
    if metric.backbone is None:
        raise ValueError(f"{metric.name} has no network taps: spatial maps need an LPIPS or E-LPIPS metric")
    check_sample_count(n)
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    reference = checked_images(metric, reference, "reference")
    stacked = stack_candidates(metric, reference, candidates)
    if not metric.is_stochastic:
        maps, distances = sample_maps(metric, reference, stacked)
        return SpatialMaps(maps, torch.zeros_like(maps.detach()), distances.unsqueeze(0), 1)
    count, batch, _, height, width = stacked.shape
    record, seeds = _draw_samples(metric, n, batch, height, width, generator, transform, dropout)
    chunk = chunk_size or default_chunk_samples(metric, batch * (count + 1), height, width, stacked.dtype)
    total = squares = None
    chunk_distances: list[torch.Tensor] = []
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        maps, sample_distances = _chunk_maps(metric, reference, stacked, record, seeds, start, stop)
        total = maps.sum(dim=0) if total is None else total + maps.sum(dim=0)
        with torch.no_grad():
            squared = maps.detach().square().sum(dim=0)
            squares = squared if squares is None else squares + squared
        chunk_distances.append(sample_distances)
    assert total is not None and squares is not None  # n >= 1: at least one chunk
    mean = total / n
    return SpatialMaps(mean, _half_width(squares, mean.detach(), n), torch.cat(chunk_distances), n)


def _chunk_maps(metric: Metric, reference: torch.Tensor, stacked: torch.Tensor, record: TransformRecord,
                seeds: list[int] | None, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples ``start..stop-1``: maps ``[k, M, N, 1, H, W]`` and distances ``[k, M, N]``."""
    from .metric import EnsembleSample

    count, batch = stacked.shape[:2]
    k = stop - start
    rows = record.rows(start * batch, stop * batch)
    hook = None
    if seeds is not None:
        keep = metric.dropout_keep
        assert keep is not None  # seeds are drawn only with dropout on, which fills in its keep probability
        hook = SampleDropout([DropoutMasks(seed, keep) for seed in seeds[start:stop]], batch)
    # The network only calls a sample's masks as (inputs, layer, groups), which a SampleDropout does as well.
    maps, distances = sample_maps(metric, reference.repeat(k, 1, 1, 1), stacked.repeat(1, k, 1, 1, 1),
                                  EnsembleSample(rows, cast("DropoutMasks | None", hook)))
    maps = maps.reshape(count, k, batch, *maps.shape[-3:]).transpose(0, 1)
    return maps, distances.reshape(count, k, batch).transpose(0, 1)


def _half_width(squares: torch.Tensor, mean: torch.Tensor, n: int) -> torch.Tensor:
    """95% half-width of per-pixel means from the sums of squares of ``n`` samples (0 for ``n = 1``)."""
    if n < 2:
        return torch.zeros_like(mean)
    variance = ((squares - n * mean.square()) / (n - 1)).clamp_min(0)
    return Z_95 * (variance / n).sqrt()


def distance_map(metric: Metric, x: torch.Tensor, y: torch.Tensor, n: int = 1,
                 generator: torch.Generator | None = None, chunk_size: int | None = None,
                 transform: TransformRecord | None = None, dropout: bool | None = None) -> SpatialMaps:
    """:func:`compare_maps` of one pair batch: ``map`` ``[N, 1, H, W]``, ``distances`` ``[n, N]``.

    Examples:
        >>> import torch, elpips
        >>> metric = elpips.Metric("elpips-vgg", backbone_weights="random", seed=0)
        >>> x, y = torch.rand(2, 1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        >>> r = elpips.spatial.distance_map(metric, x, y, n=2)
        >>> r.map.shape                                      # one value per input pixel
        torch.Size([1, 1, 32, 32])
    """
    check_sample_count(n)
    x = checked_images(metric, x, "x")
    y = checked_images(metric, y, "y")
    check_same_shape(x, y)
    result = compare_maps(metric, y, [x], n, generator, chunk_size, transform, dropout)
    return SpatialMaps(result.map[0], result.half_width[0], result.distances[:, 0], result.samples)
