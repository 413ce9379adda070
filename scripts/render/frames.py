"""Exports of a path of frames: numbered PNGs, scanline-evolution images, GIF/MP4 animations, comparison figure.

Frames here are ``[F, H, W, 3]`` uint8 arrays (:func:`frames_to_uint8` converts a ``[F, 3, H, W]`` float path).
Every file is written atomically (temporary name in the target folder, then rename). File names inside a run
directory are fixed: ``frames/frame_000.png ...``, ``scanline.png``, ``scanline_marked.png``, ``animation.gif``,
``animation.mp4``, ``comparison.png``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from elpips.io import atomic_path, save_image, to_uint8
from PIL import Image, ImageDraw, ImageFont

FRAMES_DIR = "frames"
SCANLINE = "scanline.png"
SCANLINE_MARKED = "scanline_marked.png"
GIF = "animation.gif"
MP4 = "animation.mp4"
COMPARISON = "comparison.png"
MARK_COLOR = (255, 0, 0)


@dataclass
class ExportSettings:
    """How a path is rendered.

    Attributes:
        row: image row shown in the scanline plots (``None``: the middle row, ``H // 2``).
        scale: integer enlargement of scanline plots and marked frames (``None``: :func:`default_scale`).
        fps: animation frames per second.
        pingpong: the GIF plays forward then backward (the MP4 plays forward).
    """

    row: int | None = None
    scale: int | None = None
    fps: float = 8.0
    pingpong: bool = True

    def resolved(self, height: int, width: int) -> ExportSettings:
        """A copy with ``row`` and ``scale`` filled in and checked for an ``H x W`` image."""
        row = height // 2 if self.row is None else int(self.row)
        if not 0 <= row < height:
            raise ValueError(f"row {row} is outside the image: choose 0..{height - 1}")
        scale = default_scale(width) if self.scale is None else int(self.scale)
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        if height * width * scale * scale > MAX_EXPORT_PIXELS:
            largest = int((MAX_EXPORT_PIXELS / (height * width)) ** 0.5)
            raise ValueError(f"scale {scale} would make {height * scale}x{width * scale}-pixel marked frames; "
                             f"the largest scale for {height}x{width} frames is {largest}")
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        return ExportSettings(row, scale, float(self.fps), bool(self.pingpong))

    def as_dict(self) -> dict:
        return asdict(self)


MAX_EXPORT_PIXELS = 64_000_000
"""Largest enlarged frame an export writes (64 megapixels, ~190 MB as RGB)."""


def default_scale(width: int) -> int:
    """Enlargement that makes a scanline plot about 500-1000 px wide: ``clamp(720 // W, 1, 8)``."""
    return max(1, min(8, 720 // max(1, width)))


def frames_to_uint8(frames: torch.Tensor) -> np.ndarray:
    """``[F, 3, H, W]`` float in [0, 1] -> ``[F, H, W, 3]`` uint8 (rounded, clipped)."""
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be [F, 3, H, W], got {list(frames.shape)}")
    return np.stack([to_uint8(frame) for frame in frames])


def enlarge(image: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement of ``[H, W, 3]`` by an integer ``scale``."""
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


def scanline_image(frames: np.ndarray, row: int, scale: int, time_scale: int | None = None) -> np.ndarray:
    """Row ``row`` of every frame, stacked top to bottom in time and enlarged:
    ``[F, H, W, 3]`` -> ``[F * time_scale, W * scale, 3]`` uint8 (``time_scale`` defaults to ``scale``)."""
    rows = np.repeat(np.ascontiguousarray(frames[:, row]), scale, axis=1)
    return np.repeat(rows, scale if time_scale is None else time_scale, axis=0)


def comparison_time_scale(frames: int, height: int, scale: int) -> int:
    """Vertical enlargement of a scanline evolution in the comparison figure: at least ``scale``, and enough
    for the plot to be about half as tall as the enlarged frame above it."""
    return max(scale, round(height * scale / (2 * frames)))


def marked_frame(frame: np.ndarray, row: int, scale: int) -> np.ndarray:
    """``[H, W, 3]`` frame enlarged by ``scale`` with row ``row`` painted red: ``[H*scale, W*scale, 3]``."""
    marked = enlarge(frame, scale).copy()
    marked[row * scale:(row + 1) * scale] = MARK_COLOR
    return marked


def frame_names(count: int) -> list[str]:
    """``frame_000.png ...``: the file names of ``count`` frames."""
    digits = max(3, len(str(count - 1)))
    return [f"frame_{index:0{digits}d}.png" for index in range(count)]


def save_frames(directory: str | os.PathLike, frames: np.ndarray) -> list[Path]:
    """``directory/frame_000.png ...`` (stale ``frame_*.png`` beyond ``F`` are removed)."""
    directory = Path(directory)
    paths = [save_image(directory / name, frame) for name, frame in zip(frame_names(len(frames)), frames, strict=False)]
    keep = {path.name for path in paths}
    for stale in directory.glob("frame_*.png"):
        if stale.name not in keep:
            stale.unlink()
    return paths


def gif_sequence(frames: np.ndarray, pingpong: bool) -> np.ndarray:
    """The frames a GIF shows: forward, then (ping-pong) back without repeating the two ends."""
    if pingpong and len(frames) > 2:
        return np.concatenate([frames, frames[-2:0:-1]])
    return frames


def write_gif(path: str | os.PathLike, frames: np.ndarray, fps: float, pingpong: bool = True) -> Path:
    """Looping GIF of ``[F, H, W, 3]`` uint8 frames (Pillow merges identical consecutive frames, keeping time)."""
    sequence = [Image.fromarray(frame) for frame in gif_sequence(frames, pingpong)]
    with atomic_path(path) as temporary:
        sequence[0].save(temporary, format="GIF", save_all=True, append_images=sequence[1:],
                         duration=round(1000 / fps), loop=0)
    return Path(path)


def even_sized(frames: np.ndarray) -> np.ndarray:
    """Pad ``[F, H, W, 3]`` by one edge row/column where ``H``/``W`` is odd (H.264 with yuv420p needs even)."""
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if not (pad_h or pad_w):
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


NO_ENCODER = "MP4 not written: install imageio-ffmpeg"
"""Said on stderr (once per process) and in the viewer when the MP4 encoder is missing."""
_encoder_noted = False


def note_missing_encoder() -> None:
    """One ``note:`` line on stderr, the first time an MP4 is skipped for want of imageio-ffmpeg."""
    global _encoder_noted
    if not _encoder_noted:
        _encoder_noted = True
        print(f"note: {NO_ENCODER} (pip install imageio-ffmpeg)", file=sys.stderr)


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float) -> Path | None:
    """H.264 MP4 of the frames through imageio-ffmpeg; ``None`` (nothing written, a note on stderr) when it is not
    installed."""
    try:
        import imageio_ffmpeg
    except ImportError:
        note_missing_encoder()
        return None
    video = even_sized(frames)
    height, width = video.shape[1:3]
    with atomic_path(path) as temporary:
        writer = imageio_ffmpeg.write_frames(str(temporary), (width, height), fps=fps, codec="libx264",
                                             pix_fmt_out="yuv420p", macro_block_size=2, quality=8,
                                             ffmpeg_log_level="error")
        writer.send(None)
        for frame in video:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
    return Path(path)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font only
        return ImageFont.load_default()


def comparison_figure(columns: Sequence[tuple[str, np.ndarray]], row: int, scale: int,
                      frame_index: int | None = None, footnote: str | None = None) -> np.ndarray:
    """The paper-style comparison: one column per metric, each a label, the frame ``frame_index`` (default: the
    middle one) with ``row`` marked in red, and that path's scanline evolution below (time runs down, each frame
    :func:`comparison_time_scale` pixels tall).

    Args:
        columns: ``(label, frames [F, H, W, 3] uint8)`` per metric; all of the same shape.
        footnote: a line of text under the figure (e.g. that the backbone is uncalibrated).

    Returns:
        ``[height, width, 3]`` uint8 figure on a white background.
    """
    if not columns:
        raise ValueError("a comparison needs at least one path")
    shapes = {frames.shape for _, frames in columns}
    if len(shapes) > 1:
        raise ValueError(f"all compared paths must have the same shape, got {sorted(shapes)}")
    count, height, width = columns[0][1].shape[:3]
    index = count // 2 if frame_index is None else frame_index
    if not 0 <= index < count:
        raise ValueError(f"frame {index} is outside the path: choose 0..{count - 1}")
    gap, label_height, font = 8, 22, _font(14)
    time_scale = comparison_time_scale(count, height, scale)
    panel_w, panel_h = width * scale, height * scale + count * time_scale + gap
    foot_h = label_height if footnote else 0
    figure = Image.new("RGB", (len(columns) * panel_w + (len(columns) + 1) * gap,
                               label_height + panel_h + gap + foot_h), "white")
    draw = ImageDraw.Draw(figure)
    for number, (label, frames) in enumerate(columns):
        left = gap + number * (panel_w + gap)
        draw.text((left, 4), label, fill="black", font=font)
        figure.paste(Image.fromarray(marked_frame(frames[index], row, scale)), (left, label_height))
        evolution = scanline_image(frames, row, scale, time_scale)
        figure.paste(Image.fromarray(evolution), (left, label_height + height * scale + gap))
    if footnote:
        draw.text((gap, label_height + panel_h + gap), footnote, fill="black", font=_font(12))
    return np.asarray(figure)


def export_path(run_dir: str | os.PathLike, frames: np.ndarray, settings: ExportSettings) -> dict[str, str]:
    """Write frames, scanline plots and animations of one path into ``run_dir``.

    Returns:
        ``{"frames": [...], "scanline": ..., "scanline_marked": ..., "gif": ..., "mp4": ...}``, paths relative
        to ``run_dir`` (``mp4`` is absent when imageio-ffmpeg is not installed).
    """
    run_dir = Path(run_dir)
    resolved = settings.resolved(*frames.shape[1:3])
    frame_paths = save_frames(run_dir / FRAMES_DIR, frames)
    save_image(run_dir / SCANLINE, scanline_image(frames, resolved.row, resolved.scale))
    save_image(run_dir / SCANLINE_MARKED, marked_frame(frames[len(frames) // 2], resolved.row, resolved.scale))
    write_gif(run_dir / GIF, frames, resolved.fps, resolved.pingpong)
    files: dict = {"frames": [f"{FRAMES_DIR}/{path.name}" for path in frame_paths], "scanline": SCANLINE,
                   "scanline_marked": SCANLINE_MARKED, "gif": GIF}
    if write_mp4(run_dir / MP4, frames, resolved.fps) is not None:
        files["mp4"] = MP4
    elif (run_dir / MP4).exists():
        (run_dir / MP4).unlink()  # a stale video would not match these frames
    return files
