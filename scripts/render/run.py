"""All exports of a geodesic run directory: every path's frames, scanline plots and animations, the comparison
figure and the ``index.html`` pages.

A run directory holds one path (its ``frames/*.png`` and ``log.json``) and, after ``--compare``, one
sub-directory per compared metric (``compare/<metric>/``). ``elpips geodesic`` renders a run right after solving;
``elpips export`` re-renders a saved one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from elpips.io import ImageLoadError, load_image, save_image, to_uint8, write_json

from ..common import calibration_label
from .frames import COMPARISON, ExportSettings, comparison_figure, export_path
from .viewer import write_index

LOG = "log.json"


def load_log(run_dir: Path) -> dict:
    """``run_dir/log.json`` as a dict, or a clear error."""
    path = run_dir / LOG
    if not run_dir.is_dir():
        raise ValueError(f"'{run_dir}' is not a run directory")
    if not path.is_file():
        raise ValueError(f"'{run_dir}' has no {LOG}: not a run written by 'elpips geodesic'")
    try:
        log = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"'{path}' is unreadable: {error}") from None
    if not isinstance(log, dict) or "files" not in log or "frames" not in log.get("files", {}):
        raise ValueError(f"'{path}' does not describe a geodesic run (no frame list)")
    return log


def load_frames(run_dir: Path, log: dict) -> np.ndarray:
    """The run's frames as ``[F, H, W, 3]`` uint8, read from the PNGs its log lists."""
    frames = []
    for name in log["files"]["frames"]:
        try:
            frames.append(to_uint8(load_image(run_dir / name)))
        except ImageLoadError as error:
            raise ValueError(f"run '{run_dir}' is incomplete: {error}") from None
    if len({frame.shape for frame in frames}) != 1:
        raise ValueError(f"frames of run '{run_dir}' differ in size")
    return np.stack(frames)


def column_label(log: dict) -> str:
    """The run's metric as a figure caption, marked when its backbone is uncalibrated."""
    weights = log["weights"]
    return calibration_label(weights["metric"], weights.get("calibrated", True), short=True)


def render_run(run_dir: Path, log: dict, frames: np.ndarray, settings: ExportSettings,
               compared: list[tuple[dict, np.ndarray]] | None = None) -> dict:
    """Write every export of a run and of its compared runs, the ``index.html`` pages and the compared runs'
    ``log.json`` (the caller writes the run's own ``log.json``, once, when it is complete).

    Args:
        run_dir: the run directory; compared runs live in ``run_dir / entry["dir"]`` for
            ``entry in log["compare"]``, in the same order as ``compared``.
        log: the run's log (updated with ``files`` and ``export``).
        frames: ``[F, H, W, 3]`` uint8.
        compared: ``(log, frames)`` of each compared metric's run.

    Returns:
        The updated log.
    """
    compared = compared or []
    resolved = settings.resolved(*frames.shape[1:3])
    runs = [(run_dir, log, frames)] + [
        (run_dir / entry["dir"], sub_log, sub_frames)
        for entry, (sub_log, sub_frames) in zip(log.get("compare", []), compared, strict=False)]
    kept_maps = log.get("files", {}).get("maps")  # segment maps of `elpips geodesic --maps` stay listed
    for directory, run_log, run_frames in runs:
        run_log["files"] = export_path(directory, run_frames, resolved)
        run_log["export"] = resolved.as_dict()
    if kept_maps is not None:
        log["files"]["maps"] = kept_maps
    if compared:
        columns = [(column_label(run_log), run_frames) for _, run_log, run_frames in runs]
        calibrated = all(run_log["weights"].get("calibrated", True) for _, run_log, _ in runs)
        note = None if calibrated else "(random): uncalibrated backbone, distances are not perceptual"
        save_image(run_dir / COMPARISON, comparison_figure(columns, resolved.row, resolved.scale, footnote=note))
        log["files"]["comparison"] = COMPARISON
    elif (run_dir / COMPARISON).exists() and not log.get("compare"):
        (run_dir / COMPARISON).unlink()
    for directory, run_log, _ in runs[1:]:
        write_index(directory, run_log)
        write_json(directory / LOG, run_log)
    write_index(run_dir, log, has_comparison=bool(compared))
    return log
