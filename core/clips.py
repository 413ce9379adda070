"""Clips in: a video (anything imageio-ffmpeg reads), an animated GIF, or a folder / glob pattern of frames,
read lazily as ``[n, 3, H, W]`` float frames, brought to one size by a :class:`~elpips.sizing.Sizing`.

    clip = open_clip("walk.mp4")                  # or "walk.gif", "frames/", "frames/*.png"
    clip.count, clip.fps, clip.size               # frames, frames per second, (H, W) after sizing
    clip.frames(10, 13)                           # frames 10, 11, 12: [3, 3, H, W] float32 in [0, 1]

Nothing holds the whole clip: folder frames are read one file at a time, videos and GIFs are decoded forward
from the start and only the last frame is kept (reading frames in increasing order, as windows of an
interpolation do, decodes each frame once; going back restarts the decoder). Every problem is an
:class:`~elpips.io.ImageLoadError` with the input named.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from . import io as image_io
from .io import ImageLoadError, _to_rgb, _to_unit_float, load_image, without_bomb_warning
from .sizing import Sizing, check_same_size, resample, sizing_record

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ogv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
DEFAULT_FPS = 8.0
"""Frame rate of a folder of frames (and of a GIF or video that does not say): override it with ``fps=``."""


def natural_key(path: str | os.PathLike) -> list:
    """Sort key that orders ``frame2.png`` before ``frame10.png``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", os.fspath(path))]


class _ForwardReader:
    """Frames of a decoder that can only go forward: serves increasing indices, keeping only the last frame."""

    def __init__(self, open_frames: Callable[[], Iterator[np.ndarray]], name: str) -> None:
        self._open = open_frames
        self._name = name
        self._frames: Iterator[np.ndarray] | None = None
        self._next = 0
        self._last: tuple[int, np.ndarray] | None = None

    def _restart(self) -> Iterator[np.ndarray]:
        if self._frames is not None and hasattr(self._frames, "close"):
            self._frames.close()
        self._frames, self._next, self._last = self._open(), 0, None
        return self._frames

    def read(self, index: int) -> np.ndarray:
        if self._last is not None and self._last[0] == index:
            return self._last[1]
        frames = self._frames
        if frames is None or index < self._next:
            frames = self._restart()
        while self._next <= index:
            try:
                array = next(frames)
            except StopIteration:
                raise ImageLoadError(f"{self._name}: ended after {self._next} frames (frame {index} asked for)") \
                    from None
            self._last = (self._next, array)
            self._next += 1
        assert self._last is not None  # the loop has just read frame index
        return self._last[1]


def _video_frames(path: Path) -> tuple[Callable[[], Iterator[np.ndarray]], int, float, tuple[int, int]]:
    try:
        import imageio_ffmpeg
    except ImportError:
        raise ImageLoadError(f"{path}: reading videos needs imageio-ffmpeg (pip install imageio-ffmpeg)") from None
    try:
        probe = imageio_ffmpeg.read_frames(str(path))
        meta = next(probe)
        probe.close()
        count, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    except Exception as error:  # imageio-ffmpeg raises plain exceptions for unreadable files
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ImageLoadError(f"{path}: cannot be read as a video ({reason})") from None
    width, height = meta["size"]
    fps = float(meta.get("fps") or 0) or DEFAULT_FPS

    def frames() -> Iterator[np.ndarray]:
        reader = imageio_ffmpeg.read_frames(str(path))
        next(reader)
        try:
            for raw in reader:
                yield np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)
        finally:
            reader.close()

    return frames, int(count), fps, (height, width)


def _gif_frames(path: Path) -> tuple[Callable[[], Iterator[np.ndarray]], int, float, tuple[int, int]]:
    try:
        with without_bomb_warning():  # the frame size is checked against max_pixels() by open_clip
            shape = iio.improps(path, index=None).shape
            duration = float(iio.immeta(path, index=0).get("duration") or 0)
    except Exception as error:  # noqa: BLE001 - any reader failure is an unreadable input
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ImageLoadError(f"{path}: cannot be read as an animated GIF ({reason})") from None
    count, height, width = (shape[0], shape[1], shape[2]) if len(shape) == 4 else (1, shape[0], shape[1])
    return (lambda: iter(iio.imiter(path))), int(count), (1000.0 / duration if duration > 0 else DEFAULT_FPS), \
        (height, width)


def _frame_files(spec: str) -> list[Path]:
    """The frames of a folder (image files, natural order) or of a glob pattern."""
    if any(char in spec for char in "*?["):
        files = [Path(name) for name in glob.glob(os.path.expanduser(spec)) if Path(name).is_file()]
        if not files:
            raise ImageLoadError(f"{spec}: no file matches this pattern")
    else:
        folder = Path(spec).expanduser()
        files = [path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise ImageLoadError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return sorted(files, key=natural_key)


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with without_bomb_warning():  # every frame is checked against max_pixels() when it is loaded
            shape = iio.improps(path).shape
    except Exception as error:  # noqa: BLE001
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ImageLoadError(f"{path}: cannot be read as an image ({reason})") from None
    if len(shape) == 4:  # an animated file among the frames: its first frame
        shape = shape[1:]
    return int(shape[0]), int(shape[1])


@dataclass
class Clip:
    """A clip read lazily.

    Attributes:
        source: the input as given.
        kind: ``"video"``, ``"gif"`` or ``"frames"`` (a folder or glob).
        count: number of frames.
        fps: frames per second (the file's, or :data:`DEFAULT_FPS` for frames).
        size: ``(H, W)`` of the frames :meth:`frames` returns (after sizing).
        sizing: how frames are brought to ``size``.
        files: the frame files (``kind == "frames"``), in order.
        input_size: ``(h, w)`` of the first input frame.
    """

    source: str
    kind: str
    count: int
    fps: float
    size: tuple[int, int]
    sizing: Sizing
    files: list[Path] = field(default_factory=list)
    input_size: tuple[int, int] = (0, 0)
    _reader: _ForwardReader | None = None
    _record: dict = field(default_factory=dict)

    def frame(self, index: int) -> torch.Tensor:
        """Frame ``index`` as ``[1, 3, H, W]`` float32 in [0, 1]."""
        if not 0 <= index < self.count:
            raise ValueError(f"frame {index} is outside the clip (0..{self.count - 1})")
        if self.kind == "frames":
            image = load_image(self.files[index])
        else:
            assert self._reader is not None  # a video or GIF clip has a reader
            array = _to_rgb(_to_unit_float(np.asarray(self._reader.read(index)), Path(self.source)),
                            Path(self.source))
            image = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).unsqueeze(0).contiguous()
        if tuple(image.shape[-2:]) != self.size and not self.sizing.active:
            name = self.files[index] if self.kind == "frames" else f"{self.source} frame {index}"
            check_same_size([self.input_size, (image.shape[-2], image.shape[-1])],
                            [str(self.files[0]) if self.files else self.source, str(name)])
        return resample(image, *self.size, center_crop=self.sizing.center_crop)

    def frames(self, start: int, stop: int) -> torch.Tensor:
        """Frames ``start .. stop-1`` as ``[stop - start, 3, H, W]`` float32 in [0, 1]."""
        return torch.cat([self.frame(index) for index in range(start, stop)])

    def describe(self) -> dict:
        """The input as ``log.json`` records it."""
        described = {"source": self.source, "kind": self.kind, "frames": self.count, "fps": self.fps,
                     "size_height_width": list(self.size), "sizing": self._record}
        if self.files:
            described["files"] = [str(path) for path in self.files]
        return described


def open_clip(spec: str | os.PathLike, sizing: Sizing | None = None, fps: float | None = None,
              min_size: int = 1, min_frames: int = 2) -> Clip:
    """Open a video, an animated GIF, a folder of frames or a glob pattern (``"shots/*.png"``).

    Args:
        sizing: how frames of different sizes (or a video) are brought to one size (default: not at all; frames of
            a folder must then agree in size, and the error names the options that would fix it).
        fps: override the input's frame rate.
        min_size: smallest accepted height and width after sizing.
        min_frames: fewest frames accepted.
    """
    sizing = sizing or Sizing()
    text = os.fspath(spec)
    path = Path(text).expanduser()
    files: list[Path] = []
    reader = None
    if any(char in text for char in "*?[") or path.is_dir():
        files = _frame_files(text)
        kind, count, rate = "frames", len(files), DEFAULT_FPS
        sizes = [_image_size(file) for file in files]
        if not sizing.active:
            check_same_size(sizes, [str(file) for file in files])
    elif not path.exists():
        raise ImageLoadError(f"{path}: no such file or folder")
    elif not path.is_file():  # a FIFO or a device would block or stream forever when read
        raise ImageLoadError(f"{path}: not a regular file")
    elif path.suffix.lower() == ".gif":
        open_frames, count, rate, first = _gif_frames(path)
        kind, sizes, reader = "gif", [first], _ForwardReader(open_frames, str(path))
    elif path.suffix.lower() in VIDEO_SUFFIXES:
        open_frames, count, rate, first = _video_frames(path)
        kind, sizes, reader = "video", [first], _ForwardReader(open_frames, str(path))
    else:
        raise ImageLoadError(f"{path}: not a video ({', '.join(VIDEO_SUFFIXES)}), an animated GIF or a folder of "
                             "frames")
    limit = image_io.max_pixels()
    for index, (height, width) in enumerate(sizes):  # before anything is decoded or written
        if height * width > limit:
            where = str(files[index]) if kind == "frames" else text
            raise ImageLoadError(f"{where}: frames of {height}x{width} pixels are over the limit of {limit:,} pixels "
                                 "(max_pixels)")
    if count < min_frames:
        raise ImageLoadError(f"{text}: has {count} frame{'s' if count != 1 else ''}; at least {min_frames} needed")
    if fps is not None:
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        rate = float(fps)
    target = sizing.target(sizes)
    if min(target) < min_size:
        raise ImageLoadError(f"{text}: frames are {target[0]}x{target[1]} pixels; at least {min_size}x{min_size} "
                             "needed")
    target = (target[0], target[1])
    first_size = (sizes[0][0], sizes[0][1])
    return Clip(text, kind, count, rate, target, sizing, files, first_size, reader,
                sizing_record(sizing, target, sizes if kind == "frames" else sizes[:1]))


def pan_frames(image: torch.Tensor, count: int, size: int) -> torch.Tensor:
    """A camera pan over a still: ``count`` square crops of ``image`` ``[1, 3, H, W]`` (side ``min(H, W)``)
    at evenly spaced offsets along its longer side, each resampled to ``size x size``:
    ``[count, 3, size, size]`` float in [0, 1] (a test clip made from a shipped example)."""
    if count < 2 or size < 1:
        raise ValueError(f"a pan needs at least 2 frames and a positive size, got {count} frames of {size} px")
    height, width = image.shape[-2:]
    side = min(height, width)
    offsets = torch.linspace(0, max(height, width) - side, count).round().long().tolist()
    crops = [image[..., :side, offset:offset + side] if width >= height else image[..., offset:offset + side, :side]
             for offset in offsets]
    return torch.cat([resample(crop, size, size) for crop in crops])
