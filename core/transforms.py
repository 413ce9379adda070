"""The random input transformations of E-LPIPS (``docs/algorithm.md#transforms``, ``#stratification``,
``#record``).

One ensemble sample for a batch of ``N`` images is a :class:`TransformRecord`. Sampling
(:func:`sample_transform`) and applying (:func:`apply_transform`) are pure functions: applying a record is
deterministic and differentiable, and the same record can be applied to any number of image batches (x, y,
candidates, path frames) so that they all see the same transformation.

Order of operations (``docs/algorithm.md#transforms``): scale -> offset -> flip -> swap -> colour permutation ->
colour scaling.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

MAX_OFFSET = 7
"""Offsets are drawn from ``0..MAX_OFFSET``; every image grows by ``MAX_OFFSET`` pixels in each dimension."""

MAX_SCALE_LEVELS = 8
PIXELS_PER_SCALE_LEVEL = 64
COLOR_MIN = 0.2
COLOR_RANGE = 0.8

FLIP_LEFT_RIGHT, FLIP_UP_DOWN, FLIP_BOTH, FLIP_NONE = 0, 1, 2, 3
PERMUTATIONS = torch.tensor(list(itertools.permutations(range(3))), dtype=torch.long)
"""The six permutations of the RGB channels, in :func:`itertools.permutations` order."""


@dataclass
class TransformRecord:
    """One ensemble sample for a batch of ``N`` images (``docs/algorithm.md#record``).

    Attributes:
        scale_level: ``s >= 1``; the batch is box-downscaled by ``s`` (1 = no scaling).
        scale_offset: ``(oy, ox)`` with ``0 <= oy, ox < s``: reflect-padding on top/left before downscaling.
        offset: ``[N, 2]`` long, ``(dy, dx)`` in ``0..7``: pad top ``7-dy``, bottom ``dy``, left ``7-dx``,
            right ``dx`` (reflect).
        flip: ``[N]`` long codes: 0 left-right, 1 up-down, 2 both, 3 none.
        swap: transpose height and width (whole batch).
        permutation: ``[N, 3]`` long; output channel ``j`` of image ``i`` is input channel ``permutation[i, j]``.
        color: ``[N, 3]`` float multiplicative factors in ``[0.2, 1)``, applied after the permutation.
    """

    scale_level: int
    scale_offset: tuple[int, int]
    offset: torch.Tensor
    flip: torch.Tensor
    swap: bool
    permutation: torch.Tensor
    color: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.flip.shape[0])

    def rows(self, start: int, stop: int) -> "TransformRecord":
        """The record of images ``start..stop-1`` of the batch (per-image fields sliced, shared ones kept).

        Used to evaluate one stratified sample in several network passes: the slices together are exactly
        the record they were cut from."""
        if not 0 <= start < stop <= self.batch_size:
            raise ValueError(f"rows {start}:{stop} outside a record of {self.batch_size} images")
        return TransformRecord(
            scale_level=self.scale_level,
            scale_offset=self.scale_offset,
            offset=self.offset[start:stop],
            flip=self.flip[start:stop],
            swap=self.swap,
            permutation=self.permutation[start:stop],
            color=self.color[start:stop],
        )

    def repeat(self, times: int) -> "TransformRecord":
        """The record for ``times`` stacked copies of the batch (per-image fields tiled, shared ones kept)."""
        return TransformRecord(
            scale_level=self.scale_level,
            scale_offset=self.scale_offset,
            offset=self.offset.repeat(times, 1),
            flip=self.flip.repeat(times),
            swap=self.swap,
            permutation=self.permutation.repeat(times, 1),
            color=self.color.repeat(times, 1),
        )


def default_num_scales(height: int, width: int) -> int:
    """Number of scale levels: ``clamp(min(H, W) // 64, 1, 8)`` (each level keeps at least 64 px)."""
    return max(1, min(min(height, width) // PIXELS_PER_SCALE_LEVEL, MAX_SCALE_LEVELS))


def scale_level_probabilities(num_scales: int) -> torch.Tensor:
    """``[num_scales]`` probabilities of levels ``1..S``, proportional to ``1/s^2``."""
    levels = torch.arange(1, num_scales + 1, dtype=torch.float64)
    weights = 1.0 / levels**2
    return weights / weights.sum()


def _shuffled_cycle(count: int, period: int, generator: torch.Generator | None) -> torch.Tensor:
    """``count`` stratified draws from ``0..period-1`` (``docs/algorithm.md#stratification``).

    The cycle ``0, 1, ..., period-1, 0, 1, ...`` is built up to a whole multiple of the period
    (``ceil(count / period) * period`` entries), shuffled, and cut to its first ``count`` entries. Every element is
    then uniform on ``0..period-1`` at every ``count`` (at ``count = 1`` a uniformly random value), and no value
    occurs more than ``ceil(count / period)`` times in the batch.
    """
    padded = -(-count // period) * period
    cycle = torch.arange(padded) % period
    return cycle[torch.randperm(padded, generator=generator)[:count]]


def sample_transform(
    batch: int,
    height: int,
    width: int,
    num_scales: int | None = None,
    generator: torch.Generator | None = None,
    color_mode: str = "color",
) -> TransformRecord:
    """Draw one ensemble sample for a batch of ``batch`` images of size ``height x width``.

    Flip codes, permutations and colour factors are stratified within the batch (the reference's Latin
    hypercube sampling); offsets are independent; scale level, scale offset and swap are shared. At every batch
    size each image's flip code is uniform on the 4 codes, its permutation uniform on the 6, and each colour
    factor uniform on ``[0.2, 1)``; within the batch no flip code occurs more than ``ceil(N/4)`` times, no
    permutation more than ``ceil(N/6)`` times, and each channel's factors fall one into each of the ``N`` strata.

    Args:
        batch: number of images ``N`` the record describes.
        height, width: image size; only used for the default number of scale levels.
        num_scales: ``S``; default :func:`default_num_scales`.
        generator: a CPU :class:`torch.Generator` for reproducibility (default: torch's global generator).
        color_mode: ``"color"`` (independent factor per channel) or ``"brightness"`` (one factor per image).
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    if num_scales is None:
        num_scales = default_num_scales(height, width)
    if num_scales < 1:
        raise ValueError(f"num_scales must be at least 1, got {num_scales}")
    if color_mode not in ("color", "brightness"):
        raise ValueError(f"color_mode must be 'color' or 'brightness', got {color_mode!r}")

    probabilities = scale_level_probabilities(num_scales)
    scale_level = int(torch.multinomial(probabilities, 1, generator=generator).item()) + 1
    scale_offset = tuple(int(v) for v in torch.randint(0, scale_level, (2,), generator=generator))

    offset = torch.randint(0, MAX_OFFSET + 1, (batch, 2), generator=generator)
    flip = _shuffled_cycle(batch, 4, generator)
    swap = bool(torch.rand((), generator=generator).item() < 0.5)
    permutation = PERMUTATIONS[_shuffled_cycle(batch, len(PERMUTATIONS), generator)]

    channels = 3 if color_mode == "color" else 1
    strata = torch.arange(batch, dtype=torch.float64)[:, None]
    jitter = torch.rand(batch, channels, generator=generator, dtype=torch.float64)
    u = (strata + jitter) / batch
    order = torch.stack([torch.randperm(batch, generator=generator) for _ in range(channels)], dim=1)
    u = torch.gather(u, 0, order)
    color = (COLOR_MIN + COLOR_RANGE * u).to(torch.float32).expand(batch, 3).contiguous()

    return TransformRecord(
        scale_level=scale_level,
        scale_offset=scale_offset,  # type: ignore[arg-type]
        offset=offset,
        flip=flip,
        swap=swap,
        permutation=permutation,
        color=color,
    )


def identity_transform(batch: int) -> TransformRecord:
    """A record that changes nothing but the offset padding: scale 1, offset (7, 7) (pad bottom/right by 7),
    no flip, no swap, identity permutation, colour 1. Mostly useful in tests."""
    return TransformRecord(
        scale_level=1,
        scale_offset=(0, 0),
        offset=torch.full((batch, 2), MAX_OFFSET, dtype=torch.long),
        flip=torch.full((batch,), FLIP_NONE, dtype=torch.long),
        swap=False,
        permutation=PERMUTATIONS[0].repeat(batch, 1),
        color=torch.ones(batch, 3),
    )


def scaled_size(height: int, width: int, scale_level: int) -> tuple[int, int]:
    """Image size after the scale step (before the offset step)."""
    s = scale_level
    return (height + 2 * (s - 1)) // s, (width + 2 * (s - 1)) // s


def transformed_size(height: int, width: int, record: TransformRecord) -> tuple[int, int]:
    """Output size of :func:`apply_transform` for ``height x width`` inputs."""
    h, w = scaled_size(height, width, record.scale_level)
    h, w = h + MAX_OFFSET, w + MAX_OFFSET
    return (w, h) if record.swap else (h, w)


def _downscale(images: torch.Tensor, level: int, offset: tuple[int, int]) -> torch.Tensor:
    """Reflect-pad then box-filter by ``level`` (spec 2.1). ``images``: ``[B, C, H, W]``."""
    if level == 1:
        return images
    height, width = images.shape[-2:]
    full_h = (2 * (level - 1) + height) // level * level
    full_w = (2 * (level - 1) + width) // level * level
    oy, ox = offset
    padded = F.pad(images, (ox, full_w - width - ox, oy, full_h - height - oy), mode="reflect")
    return F.avg_pool2d(padded, level, stride=level)


def _crop_indices(offset: torch.Tensor, flipped: torch.Tensor, length: int) -> torch.Tensor:
    """``[N, length + 7]`` source indices into a ``MAX_OFFSET``-padded axis, reversed where ``flipped``."""
    base = torch.arange(length + MAX_OFFSET, device=offset.device)
    indices = offset[:, None] + base[None, :]
    return torch.where(flipped[:, None], indices.flip(1), indices)


def apply_transform(images: torch.Tensor, record: TransformRecord) -> torch.Tensor:
    """Apply one ensemble sample to a batch.

    Args:
        images: ``[N, 3, H, W]`` or ``[G, N, 3, H, W]`` (G groups that all get the same per-image transform),
            any float dtype, values nominally in ``[0, 1]``.
        record: a :class:`TransformRecord` for ``N`` images.

    Returns:
        The transformed batch, same leading shape, spatial size :func:`transformed_size`.
    """
    grouped = images.dim() == 5
    x = images if grouped else images.unsqueeze(0)
    if x.dim() != 5 or x.shape[2] != 3:
        raise ValueError(f"apply_transform expects [N, 3, H, W] or [G, N, 3, H, W], got {tuple(images.shape)}")
    groups, batch = x.shape[:2]
    if batch != record.batch_size:
        raise ValueError(f"transform record is for {record.batch_size} images, batch has {batch}")
    device = x.device

    flat = x.reshape(groups * batch, 3, *x.shape[-2:])
    flat = _downscale(flat, record.scale_level, record.scale_offset)
    height, width = flat.shape[-2:]
    flat = F.pad(flat, (MAX_OFFSET,) * 4, mode="reflect")
    padded = flat.reshape(groups, batch, 3, height + 2 * MAX_OFFSET, width + 2 * MAX_OFFSET)

    # Offset and flip in one gather: crop window starts at (dy, dx) in the 7-padded image.
    offset = record.offset.to(device)
    flip = record.flip.to(device)
    flip_ud = (flip == FLIP_UP_DOWN) | (flip == FLIP_BOTH)
    flip_lr = (flip == FLIP_LEFT_RIGHT) | (flip == FLIP_BOTH)
    rows = _crop_indices(offset[:, 0], flip_ud, height)  # [N, H+7]
    cols = _crop_indices(offset[:, 1], flip_lr, width)  # [N, W+7]
    row_index = rows[None, :, None, :, None].expand(groups, batch, 3, -1, padded.shape[-1])
    out = torch.gather(padded, 3, row_index)
    col_index = cols[None, :, None, None, :].expand(groups, batch, 3, out.shape[3], -1)
    out = torch.gather(out, 4, col_index)

    if record.swap:
        out = out.transpose(-1, -2)

    permutation = record.permutation.to(device)
    channel_index = permutation[None, :, :, None, None].expand(groups, batch, 3, *out.shape[-2:])
    out = torch.gather(out, 2, channel_index)
    out = out * record.color.to(device=device, dtype=out.dtype)[None, :, :, None, None]
    return out if grouped else out.squeeze(0)
