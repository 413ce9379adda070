"""Exports of an interpolated clip, streamed frame by frame from its ``frames/*.png`` (never the whole clip in
memory): the video, the side-by-side video against the linear cross-fade, the scanline plots over the whole clip.

File names inside the run folder: ``interpolated.mp4``, ``comparison.mp4``, ``scanline.png`` (geodesic),
``scanline_comparison.png`` (geodesic | cross-fade, keyframe rows marked), ``scanline_marked.png``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from elpips.io import atomic_path, load_image, save_image, to_uint8

from .figures import labelled, row
from .frames import (
    MARK_COLOR,
    SCANLINE,
    SCANLINE_MARKED,
    enlarge,
    even_sized,
    marked_frame,
    note_missing_encoder,
    scanline_image,
)

VIDEO = "interpolated.mp4"
COMPARISON_VIDEO = "comparison.mp4"
SCANLINE_COMPARISON = "scanline_comparison.png"
MAX_SCANLINE_HEIGHT = 4096
"""Scanline plots of long clips use fewer pixel rows per frame, down to one, to stay about this tall."""
SIDE_WIDTH = 320
"""Each half of ``comparison.mp4`` is enlarged (pixel repetition, up to 8x) to be about this wide, so that the
video and its captions stay readable at 100 % zoom."""


def side_scale(width: int) -> int:
    """The enlargement of each half of ``comparison.mp4`` for ``width``-pixel frames."""
    return max(1, min(8, SIDE_WIDTH // max(1, width)))


def side_by_side(frame: np.ndarray, fade: np.ndarray, label: str) -> np.ndarray:
    """One frame of ``comparison.mp4``: the geodesic frame and the cross-fade, enlarged by :func:`side_scale`,
    captioned, 4 px apart."""
    scale = side_scale(frame.shape[1])
    return row([labelled(enlarge(frame, scale), label), labelled(enlarge(fade, scale), "linear cross-fade")], gap=4)


class VideoStream:
    """An H.264 MP4 written frame by frame (the settings of :func:`~elpips.scripts.render.frames.write_mp4`), renamed
    into place on :meth:`close`; nothing is left behind when writing fails."""

    def __init__(self, path: Path, width: int, height: int, fps: float, stack: contextlib.ExitStack) -> None:
        import imageio_ffmpeg

        self.path = path
        temporary = stack.enter_context(atomic_path(path))
        self._writer = imageio_ffmpeg.write_frames(str(temporary), (width + width % 2, height + height % 2),
                                                   fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                                   macro_block_size=2, quality=8, ffmpeg_log_level="error")
        self._writer.send(None)
        stack.callback(self._writer.close)

    def send(self, frame: np.ndarray) -> None:
        """Append one ``[H, W, 3]`` uint8 frame."""
        self._writer.send(np.ascontiguousarray(even_sized(frame[None])[0]))


def have_video_writer() -> bool:
    """``True`` when imageio-ffmpeg is installed (MP4 exports are skipped otherwise)."""
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class ClipExport:
    """What to render.

    Attributes:
        factor: ``K``: output frame ``t K`` is keyframe ``t``.
        fps: frame rate of the videos.
        row: the scanline row; scale: enlargement of the scanline plots.
        label: caption of the geodesic side of the comparison (say when the backbone is random).
    """

    factor: int
    fps: float
    row: int
    scale: int
    label: str


def read_frames(paths: list[Path]) -> Iterator[np.ndarray]:
    """The frames ``[H, W, 3]`` uint8, one at a time."""
    for path in paths:
        yield to_uint8(load_image(path))


def crossfade_frames(paths: list[Path], factor: int) -> Iterator[np.ndarray]:
    """The linear cross-fade between the keyframes (every ``factor``-th frame), one ``[H, W, 3]`` uint8 frame
    at a time, computed from the keyframes' PNGs."""
    previous = None
    for key_index in range(0, len(paths), factor):
        key = load_image(paths[key_index])[0]
        if previous is not None:
            for step in range(1, factor):
                weight = step / factor
                yield to_uint8((1 - weight) * previous + weight * key)
        yield to_uint8(key)
        previous = key


def _scanline_figure(rows: np.ndarray, fade_rows: np.ndarray, settings: ClipExport) -> tuple[np.ndarray, np.ndarray]:
    """``scanline.png`` and the labelled side-by-side comparison with red ticks at the keyframe rows."""
    count = rows.shape[0]
    time_scale = max(1, min(settings.scale, MAX_SCANLINE_HEIGHT // count))
    plain = scanline_image(rows[:, None], 0, settings.scale, time_scale)
    fade = scanline_image(fade_rows[:, None], 0, settings.scale, time_scale)
    ticks = np.full((plain.shape[0], 6, 3), 255, np.uint8)
    for key in range(0, count, settings.factor):
        ticks[key * time_scale:(key + 1) * time_scale] = MARK_COLOR
    figure = row([labelled(np.concatenate([ticks, plain], axis=1), settings.label),
                  labelled(np.concatenate([ticks, fade], axis=1), "linear cross-fade")])
    return plain, figure


def render_clip(run_dir: Path, frame_paths: list[Path], settings: ClipExport) -> dict[str, str]:
    """Write the videos and scanline plots of an interpolated clip from its frame files.

    Returns:
        ``{"scanline": ..., "scanline_marked": ..., "scanline_comparison": ..., "mp4": ..., "comparison_mp4":
        ...}`` relative to ``run_dir`` (the videos only when imageio-ffmpeg is installed).
    """
    first = to_uint8(load_image(frame_paths[0]))
    height, width = first.shape[:2]
    rows, fade_rows = [], []
    videos = have_video_writer()
    if not videos:
        note_missing_encoder()
    with contextlib.ExitStack() as stack:
        if videos:
            video = VideoStream(run_dir / VIDEO, width, height, settings.fps, stack)
            shape = side_by_side(first, first, settings.label).shape
            side = VideoStream(run_dir / COMPARISON_VIDEO, shape[1], shape[0], settings.fps, stack)
        for frame, fade in zip(read_frames(frame_paths), crossfade_frames(frame_paths, settings.factor), strict=False):
            rows.append(frame[settings.row].copy())
            fade_rows.append(fade[settings.row].copy())
            if videos:
                video.send(frame)
                side.send(side_by_side(frame, fade, settings.label))
    plain, figure = _scanline_figure(np.stack(rows), np.stack(fade_rows), settings)
    save_image(run_dir / SCANLINE, plain)
    save_image(run_dir / SCANLINE_COMPARISON, figure)
    middle = to_uint8(load_image(frame_paths[len(frame_paths) // 2]))
    save_image(run_dir / SCANLINE_MARKED, marked_frame(middle, settings.row, settings.scale))
    files = {"scanline": SCANLINE, "scanline_marked": SCANLINE_MARKED, "scanline_comparison": SCANLINE_COMPARISON}
    if videos:
        files.update(mp4=VIDEO, comparison_mp4=COMPARISON_VIDEO)
    else:
        for stale in (VIDEO, COMPARISON_VIDEO):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(run_dir / stale)
    return files
