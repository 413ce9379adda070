"""The random input transformations of E-LPIPS (``docs/algorithm.md#transforms``, ``#stratification``,
``#record``).

One ensemble sample for a batch of ``N`` images is a :class:`TransformRecord`. Sampling
(:func:`sample_transform`) and applying (:func:`apply_transform`) are pure functions: applying a record is
deterministic and differentiable, and the same record can be applied to any number of image batches (x, y,
candidates, path frames) so that they all see the same transformation.

Order of operations (``docs/algorithm.md#transforms``): scale -> offset -> flip -> swap -> colour permutation ->
colour scaling. Which of them are on, and their parameters, is an :class:`~elpips.ensemble.EnsembleConfig`
(``docs/algorithm.md#ensemble``); the record carries it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .ensemble import COLOR_MODES, DEFAULT_MAX_OFFSET, EnsembleConfig

MAX_SCALE_LEVELS = 8
PIXELS_PER_SCALE_LEVEL = 64
COLOR_MIN = 0.2
COLOR_RANGE = 0.8

FLIP_LEFT_RIGHT, FLIP_UP_DOWN, FLIP_BOTH, FLIP_NONE = 0, 1, 2, 3
PERMUTATIONS = torch.tensor(list(itertools.permutations(range(3))), dtype=torch.long)
"""The six permutations of the RGB channels, in :func:`itertools.permutations` order."""


@dataclass
class TransformRecord:
    """One ensemble sample for a batch of ``N`` images (``docs/algorithm.md#record``, ``#ensemble``).

    Fields of pieces the ensemble has switched off hold their identity value (scale 1 at offset (0, 0), offset
    (0, 0) with no padding, flip code 3, no swap, the identity permutation, colour factors 1).

    Attributes:
        scale_level: ``s >= 1``; the batch is box-downscaled by ``s`` (1 = no scaling).
        scale_offset: ``(oy, ox)`` with ``0 <= oy, ox < s``: reflect-padding on top/left before downscaling
            (crop mode: the first row/column of the cropped block).
        offset: ``[N, 2]`` long, ``(dy, dx)`` in ``0..M`` (``M = ensemble.padding``, 7 by default): pad top
            ``M-dy``, bottom ``dy``, left ``M-dx``, right ``dx`` (reflect); crop mode: keep rows
            ``dy .. dy + h - M - 1`` and columns ``dx .. dx + w - M - 1``.
        flip: ``[N]`` long codes: 0 left-right, 1 up-down, 2 both, 3 none.
        swap: transpose height and width (whole batch).
        permutation: ``[N, 3]`` long; output channel ``j`` of image ``i`` is input channel ``permutation[i, j]``.
        color: ``[N, 3]`` float multiplicative factors in ``[0.2, 1)``, applied after the permutation.
        ensemble: the settings the record was drawn under (its padding and crop mode are used when applying it).
    """

    scale_level: int
    scale_offset: tuple[int, int]
    offset: torch.Tensor
    flip: torch.Tensor
    swap: bool
    permutation: torch.Tensor
    color: torch.Tensor
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)

    @property
    def batch_size(self) -> int:
        return int(self.flip.shape[0])

    def as_dict(self) -> dict:
        """JSON-ready: every field as plain numbers and lists, the ensemble settings as a dict."""
        return {
            "scale_level": self.scale_level, "scale_offset": list(self.scale_offset),
            "offset": self.offset.tolist(), "flip": self.flip.tolist(), "swap": self.swap,
            "permutation": self.permutation.tolist(), "color": self.color.tolist(),
            "ensemble": self.ensemble.as_dict(),
        }

    @classmethod
    def from_dict(cls, values: dict) -> TransformRecord:
        """The inverse of :meth:`as_dict`."""
        return cls(
            scale_level=int(values["scale_level"]), scale_offset=tuple(values["scale_offset"]),
            offset=torch.tensor(values["offset"], dtype=torch.long).reshape(-1, 2),
            flip=torch.tensor(values["flip"], dtype=torch.long), swap=bool(values["swap"]),
            permutation=torch.tensor(values["permutation"], dtype=torch.long).reshape(-1, 3),
            color=torch.tensor(values["color"], dtype=torch.float32).reshape(-1, 3),
            ensemble=EnsembleConfig.from_dict(values.get("ensemble", {})),
        )

    def rows(self, start: int, stop: int) -> TransformRecord:
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
            ensemble=self.ensemble,
        )

    def repeat(self, times: int) -> TransformRecord:
        """The record for ``times`` stacked copies of the batch (per-image fields tiled, shared ones kept)."""
        return TransformRecord(
            scale_level=self.scale_level,
            scale_offset=self.scale_offset,
            offset=self.offset.repeat(times, 1),
            flip=self.flip.repeat(times),
            swap=self.swap,
            permutation=self.permutation.repeat(times, 1),
            color=self.color.repeat(times, 1),
            ensemble=self.ensemble,
        )


def default_scale_levels(height: int, width: int) -> int:
    """Number of scale levels: ``clamp(min(H, W) // 64, 1, 8)`` (each level keeps at least 64 px)."""
    return max(1, min(min(height, width) // PIXELS_PER_SCALE_LEVEL, MAX_SCALE_LEVELS))


def scale_level_probabilities(scale_levels: int) -> torch.Tensor:
    """``[scale_levels]`` probabilities of levels ``1..S``, proportional to ``1/s^2``."""
    levels = torch.arange(1, scale_levels + 1, dtype=torch.float64)
    weights = 1.0 / levels**2
    return weights / weights.sum()


def shuffled_cycle(count: int, period: int, generator: torch.Generator | None) -> torch.Tensor:
    """``count`` stratified draws from ``0..period-1`` (``docs/algorithm.md#stratification``).

    The cycle ``0, 1, ..., period-1, 0, 1, ...`` is built up to a whole multiple of the period
    (``ceil(count / period) * period`` entries), shuffled, and cut to its first ``count`` entries. Every element is
    then uniform on ``0..period-1`` at every ``count`` (at ``count = 1`` a uniformly random value), and no value
    occurs more than ``ceil(count / period)`` times in the batch.

    Returns:
        ``[count]`` long tensor on the CPU.
    """
    padded = -(-count // period) * period
    cycle = torch.arange(padded) % period
    return cycle[torch.randperm(padded, generator=generator)[:count]]


def sample_transform(
    batch: int,
    height: int,
    width: int,
    scale_levels: int | None = None,
    generator: torch.Generator | None = None,
    color_mode: str | None = None,
    ensemble: EnsembleConfig | None = None,
) -> TransformRecord:
    """Draw one ensemble sample for a batch of ``batch`` images of size ``height x width``.

    Flip codes, permutations and colour factors are stratified within the batch (the reference's Latin
    hypercube sampling); offsets are independent; scale level, scale offset and swap are shared. At every batch
    size each image's flip code is uniform on the 4 codes, its permutation uniform on the 6, and each colour
    factor uniform on ``[0.2, 1)``; within the batch no flip code occurs more than ``ceil(N/4)`` times, no
    permutation more than ``ceil(N/6)`` times, and each channel's factors fall one into each of the ``N`` strata.

    Every piece is drawn whether the ensemble has it on or not, in the same order with the same random numbers;
    a piece that is off is then replaced by its identity value. So switching a piece off changes exactly that
    field of the record (the others stay what the same generator state gives the full ensemble), and the
    stratification of the pieces that stay on is untouched.

    Args:
        batch: number of images ``N`` the record describes.
        height, width: image size; only used for the default number of scale levels.
        scale_levels: ``S``; default ``ensemble.scale_levels``, else :func:`default_scale_levels`.
        generator: a CPU :class:`torch.Generator` for reproducibility (default: torch's global generator).
        color_mode: ``"color"`` (independent factor per channel) or ``"brightness"`` (one factor per image);
            default ``ensemble.color_mode``.
        ensemble: which pieces are on (default: all, :class:`~elpips.ensemble.EnsembleConfig` ``()``).
    """
    ensemble = _sampling_ensemble(ensemble, scale_levels, color_mode)
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    scale_levels = ensemble.scale_levels or default_scale_levels(height, width)

    probabilities = scale_level_probabilities(scale_levels)
    scale_level = int(torch.multinomial(probabilities, 1, generator=generator).item()) + 1
    scale_offset = tuple(int(v) for v in torch.randint(0, scale_level, (2,), generator=generator))

    if ensemble.tileable:
        # A circular shift over the whole period of the scaled image.
        period_h, period_w = scaled_size(height, width, scale_level, tileable=True)
        offset = torch.stack([torch.randint(0, period_h, (batch,), generator=generator),
                              torch.randint(0, period_w, (batch,), generator=generator)], dim=1)
    else:
        offset = torch.randint(0, (ensemble.max_offset or DEFAULT_MAX_OFFSET) + 1, (batch, 2), generator=generator)
    flip = shuffled_cycle(batch, 4, generator)
    swap = bool(torch.rand((), generator=generator).item() < 0.5)
    permutation = PERMUTATIONS[shuffled_cycle(batch, len(PERMUTATIONS), generator)]
    color = _color_factors(batch, ensemble.color_mode or "color", generator)

    if not ensemble.scaling:
        scale_level, scale_offset = 1, (0, 0)
    if not ensemble.offset:
        offset = torch.zeros_like(offset)
    if not ensemble.flip:
        flip = torch.full_like(flip, FLIP_NONE)
    if not ensemble.swap:
        swap = False
    if not ensemble.permutation:
        permutation = PERMUTATIONS[0].repeat(batch, 1)
    if not ensemble.color:
        color = torch.ones_like(color)
    return TransformRecord(
        scale_level=scale_level,
        scale_offset=scale_offset,  # type: ignore[arg-type]
        offset=offset,
        flip=flip,
        swap=swap,
        permutation=permutation,
        color=color,
        ensemble=ensemble,
    )


def _sampling_ensemble(ensemble: EnsembleConfig | None, scale_levels: int | None,
                       color_mode: str | None) -> EnsembleConfig:
    """``ensemble`` (default: full) with the explicit ``scale_levels`` / ``color_mode`` arguments applied."""
    ensemble = EnsembleConfig() if ensemble is None else ensemble
    if not isinstance(ensemble, EnsembleConfig):
        raise ValueError(f"ensemble must be an EnsembleConfig, got {type(ensemble).__name__}")
    if scale_levels is not None:
        if isinstance(scale_levels, bool) or not isinstance(scale_levels, int) or scale_levels < 1:
            raise ValueError(f"scale_levels must be at least 1, got {scale_levels}")
        ensemble = ensemble.updated(scale_levels=scale_levels)
    if color_mode is not None:
        if color_mode not in COLOR_MODES:
            raise ValueError(f"color_mode must be 'color' or 'brightness', got {color_mode!r}")
        ensemble = ensemble.updated(color_mode=color_mode)
    return ensemble


def _color_factors(batch: int, color_mode: str, generator: torch.Generator | None) -> torch.Tensor:
    """``[N, 3]`` float32 factors ``0.2 + 0.8 u``, ``u`` stratified per channel (one channel for brightness)."""
    channels = 3 if color_mode == "color" else 1
    strata = torch.arange(batch, dtype=torch.float64)[:, None]
    jitter = torch.rand(batch, channels, generator=generator, dtype=torch.float64)
    u = (strata + jitter) / batch
    order = torch.stack([torch.randperm(batch, generator=generator) for _ in range(channels)], dim=1)
    u = torch.gather(u, 0, order)
    return (COLOR_MIN + COLOR_RANGE * u).to(torch.float32).expand(batch, 3).contiguous()


def identity_transform(batch: int, ensemble: EnsembleConfig | None = None) -> TransformRecord:
    """A record that changes nothing but the offset padding (draws no random numbers): scale 1, offset ``(M, M)``
    (pad bottom/right by ``M = ensemble.padding``, 7 by default; nothing with the offset off), no flip, no swap,
    identity permutation, colour 1."""
    ensemble = EnsembleConfig() if ensemble is None else ensemble
    return TransformRecord(
        scale_level=1,
        scale_offset=(0, 0),
        offset=torch.full((batch, 2), ensemble.padding, dtype=torch.long),
        flip=torch.full((batch,), FLIP_NONE, dtype=torch.long),
        swap=False,
        permutation=PERMUTATIONS[0].repeat(batch, 1),
        color=torch.ones(batch, 3),
        ensemble=ensemble,
    )


def scaled_size(height: int, width: int, scale_level: int, crop: bool = False,
                tileable: bool = False) -> tuple[int, int]:
    """Image size after the scale step (before the offset step).

    Pad mode: ``(H + 2 (s - 1)) // s``; crop mode: ``(H - s + 1) // s``; tileable mode: ``ceil(H / s)``
    (likewise for ``W``).
    """
    s = scale_level
    if tileable:
        return -(-height // s), -(-width // s)
    if crop:
        return (height - s + 1) // s, (width - s + 1) // s
    return (height + 2 * (s - 1)) // s, (width + 2 * (s - 1)) // s


def offset_size(height: int, width: int, padding: int, crop: bool = False) -> tuple[int, int]:
    """Image size after the offset step: grown by ``padding`` (pad mode) or shrunk by it (crop mode)."""
    change = -padding if crop else padding
    return height + change, width + change


def transformed_size(height: int, width: int, record: TransformRecord) -> tuple[int, int]:
    """Output size of :func:`apply_transform` for ``height x width`` inputs."""
    crop = record.ensemble.crop
    h, w = scaled_size(height, width, record.scale_level, crop, record.ensemble.tileable)
    h, w = offset_size(h, w, record.ensemble.padding, crop)
    return (w, h) if record.swap else (h, w)


def _downscale(images: torch.Tensor, level: int, offset: tuple[int, int], crop: bool = False,
               tileable: bool = False) -> torch.Tensor:
    """Reflect-pad (or crop) to a multiple of ``level``, then box-filter by ``level``. ``images``: ``[B, C, H, W]``.

    Pad mode pads ``oy`` rows on top and ``full_H - H - oy`` at the bottom, ``full_H = (H + 2 (s-1)) // s * s``;
    crop mode keeps rows ``oy .. oy + full_H - 1`` with ``full_H = (H - s + 1) // s * s`` (likewise columns).
    Tileable mode wraps around instead: rows ``-oy .. -oy + full_H - 1`` modulo ``H`` with
    ``full_H = ceil(H / s) * s`` (the block grid starts ``oy`` rows above the image, on the torus).
    """
    if level == 1:
        return images
    height, width = images.shape[-2:]
    oy, ox = offset
    if tileable:
        full_h, full_w = -(-height // level) * level, -(-width // level) * level
        rows = (torch.arange(full_h, device=images.device) - oy) % height
        cols = (torch.arange(full_w, device=images.device) - ox) % width
        wrapped = images.index_select(-2, rows).index_select(-1, cols)
        return F.avg_pool2d(wrapped, level, stride=level)
    if crop:
        full_h = (height - level + 1) // level * level
        full_w = (width - level + 1) // level * level
        cropped = images[..., oy:oy + full_h, ox:ox + full_w]
        return F.avg_pool2d(cropped, level, stride=level)
    full_h = (2 * (level - 1) + height) // level * level
    full_w = (2 * (level - 1) + width) // level * level
    padded = F.pad(images, (ox, full_w - width - ox, oy, full_h - height - oy), mode="reflect")
    return F.avg_pool2d(padded, level, stride=level)


def _crop_indices(offset: torch.Tensor, flipped: torch.Tensor, length: int) -> torch.Tensor:
    """``[N, length]`` source indices starting at ``offset``, reversed where ``flipped``."""
    base = torch.arange(length, device=offset.device)
    indices = offset[:, None] + base[None, :]
    return torch.where(flipped[:, None], indices.flip(1), indices)


def _offset_and_flip(x: torch.Tensor, record: TransformRecord) -> torch.Tensor:
    """The offset window (pad or crop mode) and the flips of ``x`` ``[G, N, 3, h, w]``, in two gathers."""
    groups, batch, _, height, width = x.shape
    padding, crop = record.ensemble.padding, record.ensemble.crop
    flip = record.flip.to(x.device)
    if record.ensemble.tileable:
        return _shift_and_flip(x, record.offset.to(x.device), flip)
    if padding == 0 and bool((flip == FLIP_NONE).all()):
        return x
    if crop and (height <= padding or width <= padding):
        raise ValueError(f"crop mode: {height}x{width} images leave nothing after cropping {padding} px")
    if not crop and padding:
        x = F.pad(x.reshape(groups * batch, 3, height, width), (padding,) * 4, mode="reflect")
        x = x.reshape(groups, batch, 3, height + 2 * padding, width + 2 * padding)
    out_h, out_w = offset_size(height, width, padding, crop)
    # Window start in x: (dy, dx) in the padded image, or (dy, dx) in the image itself when cropping.
    offset = record.offset.to(x.device)
    flip_ud = (flip == FLIP_UP_DOWN) | (flip == FLIP_BOTH)
    flip_lr = (flip == FLIP_LEFT_RIGHT) | (flip == FLIP_BOTH)
    rows = _crop_indices(offset[:, 0], flip_ud, out_h)  # [N, out_h]
    cols = _crop_indices(offset[:, 1], flip_lr, out_w)  # [N, out_w]
    row_index = rows[None, :, None, :, None].expand(groups, batch, 3, -1, x.shape[-1])
    out = torch.gather(x, 3, row_index)
    col_index = cols[None, :, None, None, :].expand(groups, batch, 3, out.shape[3], -1)
    return torch.gather(out, 4, col_index)


def _shift_and_flip(x: torch.Tensor, offset: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Tileable mode's offset and flips of ``x`` ``[G, N, 3, h, w]``: output pixel ``(i, j)`` of image ``n`` is
    ``x[(i + dy) mod h, (j + dx) mod w]`` (a circular shift, the size unchanged), then flipped."""
    groups, batch, _, height, width = x.shape
    flip_ud = (flip == FLIP_UP_DOWN) | (flip == FLIP_BOTH)
    flip_lr = (flip == FLIP_LEFT_RIGHT) | (flip == FLIP_BOTH)
    rows = _crop_indices(offset[:, 0], flip_ud, height) % height  # [N, h]
    cols = _crop_indices(offset[:, 1], flip_lr, width) % width  # [N, w]
    row_index = rows[None, :, None, :, None].expand(groups, batch, 3, -1, width)
    out = torch.gather(x, 3, row_index)
    col_index = cols[None, :, None, None, :].expand(groups, batch, 3, height, -1)
    return torch.gather(out, 4, col_index)


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
    flat = _downscale(flat, record.scale_level, record.scale_offset, record.ensemble.crop,
                      record.ensemble.tileable)
    out = _offset_and_flip(flat.reshape(groups, batch, 3, *flat.shape[-2:]), record)

    if record.swap:
        out = out.transpose(-1, -2)

    permutation = record.permutation.to(device)
    channel_index = permutation[None, :, :, None, None].expand(groups, batch, 3, *out.shape[-2:])
    out = torch.gather(out, 2, channel_index)
    out = out * record.color.to(device=device, dtype=out.dtype)[None, :, :, None, None]
    return out if grouped else out.squeeze(0)
