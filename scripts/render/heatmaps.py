"""Distance maps as pictures: a perceptually ordered colour map, colour bar, overlay on an image, figure, and raw
float files (``.npy``, 32-bit float ``.tiff``). Pure arrays except the ``write_*`` functions, which write
atomically (temporary name, then rename).

The colour map is computed here rather than copied: 256 steps whose CIELAB lightness ``L*`` rises linearly from
15 to 95 while the hue turns from violet through blue, teal and green to yellow (the path viridis takes) at the
largest chroma, up to a cap, that stays inside sRGB. Equal steps in value are equal steps in lightness, so the
order of values is readable in greyscale and with colour-vision deficiencies.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from elpips.io import atomic_path, save_image
from PIL import Image, ImageDraw, ImageFont

from .figures import BACKGROUND, GAP, column, labelled, row

RAW_SUFFIXES = (".npy", ".tif", ".tiff")
LIGHTNESS = (15.0, 95.0)
HUE_DEGREES = (305.0, 100.0)
CHROMA = (35.0, 85.0)
COLORBAR_WIDTH = 14
PANEL_SIDE = 256
"""Small maps are enlarged by pixel repetition until a panel is about this many pixels on its longer side."""


def _lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """``[..., 3]`` CIELAB (D65) -> ``[..., 3]`` sRGB in nominal [0, 1] (not clipped)."""
    lightness, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    fy = (lightness + 16) / 116
    fx, fz = fy + a / 500, fy - b / 200
    delta = 6 / 29

    def inverse(f: np.ndarray) -> np.ndarray:
        return np.where(f > delta, f**3, 3 * delta**2 * (f - 4 / 29))

    xyz = np.stack([0.95047 * inverse(fx), inverse(fy), 1.08883 * inverse(fz)], axis=-1)
    to_linear_rgb = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]])
    linear = xyz @ to_linear_rgb.T
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.abs(linear) ** (1 / 2.4) - 0.055)


def _in_gamut(rgb: np.ndarray) -> np.ndarray:
    return np.all((rgb >= -1e-9) & (rgb <= 1 + 1e-9), axis=-1)


def perceptual_colormap(steps: int = 256) -> np.ndarray:
    """``[steps, 3]`` uint8: lightness linear in ``L*``, hue along the violet-to-yellow path, chroma reduced by
    bisection where the target chroma would leave the sRGB gamut."""
    t = np.linspace(0.0, 1.0, steps)
    lightness = LIGHTNESS[0] + (LIGHTNESS[1] - LIGHTNESS[0]) * t
    hue = np.radians(HUE_DEGREES[0] + (HUE_DEGREES[1] - HUE_DEGREES[0]) * t)
    low, high = np.zeros(steps), CHROMA[0] + (CHROMA[1] - CHROMA[0]) * t**2
    target = high.copy()

    def srgb(chroma: np.ndarray) -> np.ndarray:
        return _lab_to_srgb(np.stack([lightness, chroma * np.cos(hue), chroma * np.sin(hue)], axis=-1))

    fits = _in_gamut(srgb(target))
    for _ in range(40):  # bisection on the chroma of the entries that do not fit
        middle = (low + high) / 2
        inside = _in_gamut(srgb(middle))
        low, high = np.where(inside, middle, low), np.where(inside, high, middle)
    chroma = np.where(fits, target, low)
    return np.round(np.clip(srgb(chroma), 0, 1) * 255).astype(np.uint8)


COLORMAP = perceptual_colormap()


COLOR_QUANTILE = 0.995
"""Colours span 0 .. this quantile of the map (larger values saturate), so a few extreme pixels (often at the
border) do not darken the rest; the title states the true maximum."""


def color_limit(values: np.ndarray) -> float:
    """The top of the colour range: the :data:`COLOR_QUANTILE` quantile of ``values``, or their maximum when that
    quantile is 0."""
    limit = float(np.quantile(values, COLOR_QUANTILE))
    return limit if limit > 0 else float(np.max(values))


def colorize(values: np.ndarray, vmax: float) -> np.ndarray:
    """``[H, W]`` non-negative values -> ``[H, W, 3]`` uint8 colours, 0 darkest and ``vmax`` (and above)
    brightest."""
    scale = (len(COLORMAP) - 1) / vmax if vmax > 0 else 0.0
    index = np.clip(np.round(np.asarray(values, dtype=np.float64) * scale), 0, len(COLORMAP) - 1)
    return COLORMAP[index.astype(np.int64)]


def overlay(image: np.ndarray, values: np.ndarray, vmax: float) -> np.ndarray:
    """``image`` ``[H, W, 3]`` uint8 in grey, tinted by the map's colours where the map is large: the colour's
    weight rises from 0.15 at 0 to 0.85 at ``vmax``."""
    grey = (image.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))[..., None]
    weight = 0.15 + 0.7 * np.clip(np.asarray(values, dtype=np.float64) / vmax if vmax > 0 else 0.0, 0, 1)[..., None]
    mixed = (1 - weight) * grey + weight * colorize(values, vmax).astype(np.float64)
    return np.round(mixed).astype(np.uint8)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font only
        return ImageFont.load_default()


def colorbar(height: int, vmax: float, width: int = COLORBAR_WIDTH) -> np.ndarray:
    """A vertical colour bar ``[height, width + labels, 3]`` uint8: ``vmax`` at the top (written ``>= vmax``:
    larger values saturate), 0 at the bottom, the middle value between, each written beside the bar."""
    ramp = np.linspace(vmax, 0.0, max(2, height))[:, None].repeat(width, axis=1)
    bar = colorize(ramp, vmax)
    canvas = Image.new("RGB", (width + 70, max(2, height)), (BACKGROUND,) * 3)
    canvas.paste(Image.fromarray(bar), (0, 0))
    draw, font = ImageDraw.Draw(canvas), _font(11)
    for text, y in ((f">= {vmax:.3g}", 0), (f"{vmax / 2:.3g}", height // 2 - 6), ("0", height - 12)):
        draw.text((width + 4, max(0, y)), text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def enlargement(height: int, width: int) -> int:
    """Integer factor that makes the longer side about :data:`PANEL_SIDE` pixels (1 for large images)."""
    return max(1, min(8, PANEL_SIDE // max(height, width)))


def _enlarge(array: np.ndarray, scale: int) -> np.ndarray:
    return np.repeat(np.repeat(array, scale, axis=0), scale, axis=1) if scale > 1 else array


def _text_strip(text: str, width: int, size: int = 12) -> np.ndarray:
    strip = Image.new("RGB", (max(1, width), size + 8), (BACKGROUND,) * 3)
    ImageDraw.Draw(strip).text((2, 3), text, fill=(0, 0, 0), font=_font(size))
    return np.asarray(strip)


def map_figure(images: Sequence[tuple[str, np.ndarray]], values: np.ndarray, vmax: float, title: str,
               footnote: str | None = None) -> np.ndarray:
    """Labelled panels: ``images`` (``(label, [H, W, 3] uint8)``, the first is the overlay's base), the heat map
    with its colour bar (0 .. ``vmax``), the overlay; ``title`` above and ``footnote`` (e.g. that the backbone is
    random) below. Returns ``[height, width, 3]`` uint8."""
    scale = enlargement(*values.shape)
    panels = [labelled(_enlarge(image, scale), label) for label, image in images]
    heat = _enlarge(colorize(values, vmax), scale)
    bar = colorbar(heat.shape[0], vmax)
    panels.append(labelled(row([heat, bar], gap=4), "distance map"))
    panels.append(labelled(_enlarge(overlay(images[0][1], values, vmax), scale), f"overlay on {images[0][0]}"))
    body = row(panels)
    parts = [_text_strip(title, body.shape[1]), body]
    if footnote:
        parts.append(_text_strip(footnote, body.shape[1], size=11))
    return column(parts, gap=GAP // 2)


def check_raw_path(path: str | os.PathLike) -> Path:
    """``ValueError`` unless ``path`` ends in ``.npy``, ``.tif`` or ``.tiff``."""
    target = Path(path)
    if target.suffix.lower() not in RAW_SUFFIXES:
        raise ValueError(f"raw map file must end in {', '.join(RAW_SUFFIXES)}, got '{target}'")
    return target


def check_output_file(path: str | os.PathLike) -> Path:
    """``ValueError`` unless ``path``'s folder exists (checked before any long computation)."""
    target = Path(path)
    if not target.parent.is_dir():
        raise ValueError(f"folder of '{target}' does not exist")
    if target.is_dir():
        raise ValueError(f"'{target}' is a folder, not a file name")
    return target


def write_raw(path: str | os.PathLike, values: np.ndarray) -> Path:
    """``[H, W]`` float32 values as ``.npy`` or single-channel 32-bit float ``.tiff``, atomically."""
    target = check_raw_path(path)
    array = np.ascontiguousarray(values, dtype=np.float32)
    with atomic_path(target) as temporary:
        if target.suffix.lower() == ".npy":
            with open(temporary, "wb") as handle:
                np.save(handle, array)
        else:
            Image.fromarray(array).save(temporary, format="TIFF")
    return target


def write_figure(path: str | os.PathLike, figure: np.ndarray) -> Path:
    """The figure as PNG (or the format ``path``'s suffix names), atomically."""
    return save_image(path, figure)


MAPS_DIR = "maps"


def write_segment_maps(run_dir: str | os.PathLike, values: np.ndarray) -> dict:
    """Heat maps of a path's segments ``values`` ``[K, H, W]`` on one colour range (0 .. :func:`color_limit`):
    ``maps/segment_000.png ...``, ``maps/colorbar.png`` and the floats in ``maps/values.npy``; stale segment
    files beyond ``K`` are removed. Returns the paths relative to ``run_dir``."""
    folder = Path(run_dir) / MAPS_DIR
    vmax = color_limit(values)
    digits = max(3, len(str(len(values) - 1)))
    names = []
    for index, segment in enumerate(values):
        names.append(save_image(folder / f"segment_{index:0{digits}d}.png", colorize(segment, vmax)).name)
    for stale in folder.glob("segment_*.png"):
        if stale.name not in names:
            stale.unlink()
    save_image(folder / "colorbar.png", colorbar(max(64, values.shape[1]), vmax))
    with atomic_path(folder / "values.npy") as temporary, open(temporary, "wb") as handle:
        np.save(handle, np.ascontiguousarray(values, dtype=np.float32))
    return {"segments": [f"{MAPS_DIR}/{name}" for name in names], "colorbar": f"{MAPS_DIR}/colorbar.png",
            "values": f"{MAPS_DIR}/values.npy"}
