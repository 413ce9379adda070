"""Figures from image tensors: labelled tiles, grids and the barycenter contact sheet (pure arrays, no files)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from elpips.io import to_uint8
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = 255
LABEL_HEIGHT = 20
LABEL_FONT_SIZE = 14
"""Captions are drawn in a 14-px scalable font (readable at 100 % zoom; the bitmap default is about 8 px)."""
GAP = 6
AUTO_WIDTH = 192


def tile(image: torch.Tensor | np.ndarray, scale: int = 1) -> np.ndarray:
    """``[1, 3, H, W]``/``[3, H, W]`` float in [0, 1] (or ``[H, W, 3]`` uint8) -> ``[H*scale, W*scale, 3]`` uint8,
    enlarged by pixel repetition (no smoothing, so small crops stay readable)."""
    array = image if isinstance(image, np.ndarray) else to_uint8(image)
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    return np.repeat(np.repeat(array, scale, axis=0), scale, axis=1) if scale > 1 else array


def label_font(size: int = LABEL_FONT_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's scalable default font at ``size`` px (the bitmap font on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font only
        return ImageFont.load_default()


def text_width(text: str, size: int = LABEL_FONT_SIZE) -> int:
    """Width in pixels of ``text`` drawn by :func:`labelled`, its 2-px margins included."""
    return int(np.ceil(label_font(size).getlength(text))) + 4


def labelled(array: np.ndarray, text: str) -> np.ndarray:
    """``array`` ``[H, W, 3]`` uint8 with ``text`` written (14 px) in a white strip above it:
    ``[H + 20, max(W, text width), 3]``; a caption wider than the image widens it with white on the right, so it is
    never cut."""
    width = max(array.shape[1], text_width(text))
    if width > array.shape[1]:
        array = np.pad(array, ((0, 0), (0, width - array.shape[1]), (0, 0)), constant_values=BACKGROUND)
    strip = Image.new("RGB", (width, LABEL_HEIGHT), (BACKGROUND,) * 3)
    ImageDraw.Draw(strip).text((2, 2), text, fill=(0, 0, 0), font=label_font())
    return np.concatenate([np.asarray(strip), array], axis=0)


def row(tiles: Sequence[np.ndarray], gap: int = GAP) -> np.ndarray:
    """Tiles side by side (top-aligned, padded to the tallest), ``gap`` white pixels between them."""
    if not tiles:
        raise ValueError("a row needs at least one tile")
    height = max(t.shape[0] for t in tiles)
    parts = []
    for index, item in enumerate(tiles):
        if index:
            parts.append(np.full((height, gap, 3), BACKGROUND, np.uint8))
        pad = np.full((height - item.shape[0], item.shape[1], 3), BACKGROUND, np.uint8)
        parts.append(np.concatenate([item, pad], axis=0))
    return np.concatenate(parts, axis=1)


def column(rows: Sequence[np.ndarray], gap: int = GAP) -> np.ndarray:
    """Rows stacked (left-aligned, padded to the widest), ``gap`` white pixels between them: :func:`row` of the
    transposed rows, transposed back."""
    if not rows:
        raise ValueError("a column needs at least one row")
    stacked = row([item.transpose(1, 0, 2) for item in rows], gap)
    return np.ascontiguousarray(stacked.transpose(1, 0, 2))


def grid(tiles: Sequence[np.ndarray], columns: int, gap: int = GAP) -> np.ndarray:
    """Tiles in rows of ``columns``."""
    if columns < 1:
        raise ValueError(f"columns must be positive, got {columns}")
    return column([row(tiles[i:i + columns], gap) for i in range(0, len(tiles), columns)], gap)


def contact_sheet(inputs: torch.Tensor, l2_mean: torch.Tensor, result: torch.Tensor,
                  result_label: str = "barycenter", original: torch.Tensor | None = None, columns: int = 5,
                  scale: int | None = None) -> np.ndarray:
    """Inputs (in rows of ``columns``), then ``[original |] L2 mean | result``, each labelled.

    Args:
        inputs: ``[N, 3, H, W]`` in [0, 1]; ``l2_mean``, ``result``, ``original``: ``[1, 3, H, W]`` in [0, 1].
        result_label: caption of the result tile (say which metric made it).
        scale: integer enlargement of every tile (default: up to 4x, so tiles are about 128 px wide and their
            captions fit).

    Returns:
        ``[height, width, 3]`` uint8.
    """
    if scale is None:
        scale = max(1, min(4, AUTO_WIDTH // inputs.shape[-1]))
    input_tiles = [labelled(tile(image, scale), f"input {index + 1}") for index, image in enumerate(inputs)]
    last = [] if original is None else [labelled(tile(original, scale), "original")]
    last += [labelled(tile(l2_mean, scale), "L2 mean"), labelled(tile(result, scale), result_label)]
    return column([grid(input_tiles, columns), row(last)], gap=2 * GAP)


def ablation_figure(source: torch.Tensor, target: torch.Tensor, attacked: Sequence[torch.Tensor],
                    captions: Sequence[str], details: Sequence[str], title: str,
                    scale: int | None = None) -> np.ndarray:
    """The ablation figure: source, target, then one attacked image per rung, in one labelled row.

    Args:
        source, target: ``[1, 3, H, W]`` in [0, 1].
        attacked: one ``[1, 3, H, W]`` per rung.
        captions: one per rung (e.g. ``"+geom."``); panels are lettered (a), (b), ... as in the paper.
        details: one line per rung under its caption (e.g. ``"pull 0.42"``).
        title: a line above the row (say there when the backbone is random).
        scale: integer enlargement (default: tiles about 128 px wide).

    Returns:
        ``[height, width, 3]`` uint8.
    """
    if len(attacked) != len(captions) or len(attacked) != len(details):
        raise ValueError("ablation_figure needs one caption and one detail line per attacked image")
    scale = scale or max(1, min(4, AUTO_WIDTH // source.shape[-1]))
    panels = [("source", ""), ("target", "")] + list(zip(captions, details, strict=False))
    images = [source, target, *attacked]
    tiles = [labelled(labelled(tile(image, scale), detail), f"({chr(ord('a') + index)}) {caption}")
             for index, (image, (caption, detail)) in enumerate(zip(images, panels, strict=False))]
    return labelled(row(tiles), title)
