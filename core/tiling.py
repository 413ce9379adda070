"""Tiled evaluation: the distance of one image pair under one ensemble sample, computed tile by tile, for images
too large for one network pass within the memory budget (``docs/algorithm.md#memory``).

The transformed pair is cut into tiles whose cores cover it exactly; each tile runs the network on its core plus a
:data:`HALO` of context on every side (clipped at the image border, where the network's own zero padding applies).
Every layer of both backbones reaches at most :data:`HALO` input pixels away, and tiles start on multiples of
:data:`ALIGN` (the backbones' total stride), so every tap value in a core equals the one the whole-image pass
computes; each tap's weighted squared differences are summed over the cores and divided by the tap's pixel count.

Dropout masks must then agree wherever tiles overlap: :class:`BlockDropoutMasks` draws every layer's mask in
fixed 32x32 blocks of that layer's grid, each from a generator seeded by (sample seed, layer, block), so a mask
value depends only on its global position. The masks are i.i.d. Bernoulli like :class:`~elpips.dropout.DropoutMasks`
(the same distribution, other random numbers).
"""

from __future__ import annotations

import math
from typing import cast

import torch

from .dropout import dropped_positions
from .memory import BYTES_PER_PIXEL_FLOAT32

HALO = 128
"""Context in input pixels around each tile core: at least the receptive-field radius of every tap (VGG16 about
105 px, SqueezeNet 1.1 about 118 px), and a multiple of :data:`ALIGN`."""

ALIGN = 16
"""Tile cores start on multiples of the backbones' total stride (four poolings, or a stride-2 convolution and
three poolings), so each tile's pooling grid is the whole image's."""

MIN_CORE = 64
BLOCK = 32


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (SplitMix64 finaliser over their sequence)."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (value & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        state = (state ^ (state >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 29
    return state >> 1


class BlockDropoutMasks:
    """Dropout masks whose value at a position depends only on (seed, layer, position): drawn per 32x32 block
    of the layer's grid (all channels of the block together), so any window of the mask can be produced alone.

    Args:
        seed: the sample's mask seed.
        keep_probability: probability of keeping an element; kept elements are scaled by ``1/keep``.
    """

    def __init__(self, seed: int, keep_probability: float) -> None:
        self.seed = int(seed)
        self.keep_probability = float(keep_probability)

    def _block(self, layer: int, block_row: int, block_column: int, channels: int) -> torch.Tensor:
        """The ``[C, 32, 32]`` mask block, stored channel fastest like the whole-image masks."""
        values = torch.full((BLOCK * BLOCK * channels,), 1.0 / self.keep_probability)
        if self.keep_probability < 1.0:
            generator = torch.Generator().manual_seed(_mix(self.seed, layer, block_row, block_column))
            values.index_fill_(0, dropped_positions(values.numel(), 1.0 - self.keep_probability, generator), 0.0)
        return values.view(BLOCK, BLOCK, channels).permute(2, 0, 1)

    def window(self, layer: int, channels: int, top: int, left: int, height: int, width: int) -> torch.Tensor:
        """The mask of rows ``top..top+height-1`` and columns ``left..left+width-1`` of layer ``layer``'s grid:
        ``[C, height, width]`` float32 on the CPU."""
        out = torch.empty(channels, height, width)
        for block_row in range(top // BLOCK, (top + height - 1) // BLOCK + 1):
            row_start, row_stop = max(top, block_row * BLOCK), min(top + height, (block_row + 1) * BLOCK)
            for block_column in range(left // BLOCK, (left + width - 1) // BLOCK + 1):
                column_start = max(left, block_column * BLOCK)
                column_stop = min(left + width, (block_column + 1) * BLOCK)
                block = self._block(layer, block_row, block_column, channels)
                out[:, row_start - top:row_stop - top, column_start - left:column_stop - left] = block[
                    :, row_start - block_row * BLOCK:row_stop - block_row * BLOCK,
                    column_start - block_column * BLOCK:column_stop - block_column * BLOCK]
        return out


def network_strides(backbone: torch.nn.Module) -> tuple[dict[int, int], list[int]]:
    """The strides (input pixels per grid step) of every dropout layer's input and of every tap, found by running
    the network on two widths 16 px apart (cached on the backbone)."""
    cached = getattr(backbone, "_tiling_strides", None)
    if cached is not None:
        return cached
    buffer = next(backbone.buffers())

    def grid_widths(size: int) -> tuple[dict[int, int], list[int]]:
        widths: dict[int, int] = {}

        def record(inputs: torch.Tensor, layer: int) -> torch.Tensor:
            widths[layer] = inputs.shape[-1]
            return inputs

        with torch.no_grad():
            taps = backbone(torch.zeros(1, 3, 64, size, device=buffer.device, dtype=buffer.dtype), record)
        return widths, [tap.shape[-1] for tap in taps]

    (small_layers, small_taps), (large_layers, large_taps) = grid_widths(64), grid_widths(64 + ALIGN)
    layers = {layer: ALIGN // (large_layers[layer] - small_layers[layer]) for layer in small_layers}
    taps = [ALIGN // (large - small) for small, large in zip(small_taps, large_taps, strict=False)]
    # nn.Module.__setattr__ is typed for tensors and modules, but stores any other value as a plain attribute.
    backbone._tiling_strides = (layers, taps)  # type: ignore[assignment]
    return layers, taps


def core_size(budget: int, backbone: str, element_size: int = 4) -> int:
    """Side of a tile core such that one tile of a pair (core plus halo, two images) fits in ``budget``."""
    per_pixel = BYTES_PER_PIXEL_FLOAT32[backbone] * max(1, element_size // 4) * 2
    side = int(math.sqrt(budget / per_pixel)) - 2 * HALO
    return max(MIN_CORE, side // ALIGN * ALIGN)


def _spans(length: int, core: int) -> list[tuple[int, int, int, int]]:
    """``(core_start, core_stop, region_start, region_stop)`` along one axis."""
    spans = []
    for start in range(0, length, core):
        stop = min(length, start + core)
        spans.append((start, stop, max(0, start - HALO), min(length, stop + HALO)))
    return spans


def tiled_distance(backbone: torch.nn.Module, network_input: torch.Tensor, linear_weights: list[torch.Tensor],
                   normalize, masks: BlockDropoutMasks | None, core: int) -> torch.Tensor:
    """The distance of one pair from its network input ``[2, 3, H, W]`` (both images already transformed and
    scaled), tile by tile; a 0-dim float64 tensor.

    Args:
        backbone: a staged feature network (``backbone(x, dropout_hook)`` -> taps).
        linear_weights: ``[C_l]`` per tap.
        normalize: the unit normalisation over channels applied to every tap.
        masks: dropout masks, or ``None`` for none.
        core: tile core side in input pixels (a multiple of :data:`ALIGN`).
    """
    height, width = network_input.shape[-2:]
    layer_stride, tap_stride = network_strides(backbone)
    sums = [torch.zeros((), dtype=torch.float64) for _ in linear_weights]
    counts = [0 for _ in linear_weights]
    for row_start, row_stop, top, bottom in _spans(height, core):
        for column_start, column_stop, left, right in _spans(width, core):
            region = network_input[:, :, top:bottom, left:right]
            hook = None if masks is None else _window_hook(masks, layer_stride, top, left)
            taps = backbone(region, hook)
            for index, tap in enumerate(taps):
                stride = tap_stride[index]
                rows = _core_slice(row_start, row_stop, top, height, stride, tap.shape[-2])
                columns = _core_slice(column_start, column_stop, left, width, stride, tap.shape[-1])
                normalized = normalize(tap[:, :, rows, columns])
                difference = (normalized[0] - normalized[1]).square().sum(dim=(-2, -1)).double()
                sums[index] += difference @ linear_weights[index].double()
                counts[index] += (rows.stop - rows.start) * (columns.stop - columns.start)
    return cast(torch.Tensor, sum(total / count for total, count in zip(sums, counts, strict=False)))  # >= 1 tap


def _core_slice(core_start: int, core_stop: int, region_start: int, length: int, stride: int,
                tap_length: int) -> slice:
    """The tap indices of a core within its region's tap grid; a core that ends at the image end keeps every
    tap index up to the grid's end."""
    first = (core_start - region_start) // stride
    last = tap_length if core_stop == length else (core_stop - region_start) // stride
    return slice(first, last)


def _window_hook(masks: BlockDropoutMasks, strides: dict[int, int], top: int, left: int):
    def hook(inputs: torch.Tensor, layer: int) -> torch.Tensor:
        stride = strides[layer]
        window = masks.window(layer, inputs.shape[1], top // stride, left // stride, *inputs.shape[-2:])
        return inputs * window.to(device=inputs.device, dtype=inputs.dtype)
    return hook
