"""``elpips export RUN_DIR``: re-render the exports of a saved geodesic run (frames + ``log.json``).

A run directory holds one path (its ``frames/*.png`` and ``log.json``) and, after ``--compare``, one
sub-directory per compared metric (``compare/<metric>/``). This module renders all exports of such a tree;
``elpips geodesic`` uses it too, right after solving.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from elpips.io import ImageLoadError, load_image, save_image, to_uint8, write_json

from .exports import COMPARISON, ExportSettings, comparison_figure, export_path
from .viewer import write_index

LOG = "log.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="re-render the exports of a saved geodesic run",
        description="Re-render frames, scanline plots, animations, comparison figure and index.html of a run "
                    "directory written by 'elpips geodesic', optionally with another row, scale or frame rate.",
    )
    parser.add_argument("run_dir", help="run directory (contains log.json and frames/)")
    add_export_options(parser, defaults_from_log=True)
    parser.set_defaults(handler=run)


def add_export_options(parser: argparse.ArgumentParser, defaults_from_log: bool = False) -> None:
    """``--row --scale --fps --pingpong/--no-pingpong`` (``None`` = keep the run's or use the default)."""
    keep = " (default: as in log.json)" if defaults_from_log else ""
    parser.add_argument("--row", type=int, default=None, help=f"scanline row (default: middle){keep}")
    parser.add_argument("--scale", type=int, default=None, help=f"enlargement of scanline plots{keep}")
    parser.add_argument("--fps", type=float, default=None, help=f"animation frame rate (default 8){keep}")
    parser.add_argument("--pingpong", action=argparse.BooleanOptionalAction, default=None,
                        help=f"GIF plays forward and back (default on){keep}")


def settings_from(args: argparse.Namespace, base: ExportSettings | None = None) -> ExportSettings:
    """Export settings: ``base`` (or the defaults) with the options the user gave."""
    settings = base or ExportSettings()
    return ExportSettings(
        row=settings.row if args.row is None else args.row,
        scale=settings.scale if args.scale is None else args.scale,
        fps=settings.fps if args.fps is None else args.fps,
        pingpong=settings.pingpong if args.pingpong is None else args.pingpong,
    )


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
    """``elpips-vgg``, with ``*`` when its backbone is uncalibrated."""
    weights = log["weights"]
    return weights["metric"] + ("" if weights.get("calibrated", True) else "*")


def render_run(run_dir: Path, log: dict, frames: np.ndarray, settings: ExportSettings,
               compared: list[tuple[dict, np.ndarray]] | None = None) -> dict:
    """Write every export of a run (and of its compared runs), its ``index.html`` and ``log.json``.

    Args:
        run_dir: the run directory; compared runs live in ``run_dir / entry["dir"]`` for
            ``entry in log["compare"]``, in the same order as ``compared``.
        log: the run's log (updated with ``files`` and ``export``, then written).
        frames: ``[F, H, W, 3]`` uint8.
        compared: ``(log, frames)`` of each compared metric's run.

    Returns:
        The updated log.
    """
    compared = compared or []
    resolved = settings.resolved(*frames.shape[1:3])
    runs = [(run_dir, log, frames)] + [(run_dir / entry["dir"], sub_log, sub_frames)
                                       for entry, (sub_log, sub_frames) in zip(log.get("compare", []), compared)]
    kept_maps = log.get("files", {}).get("maps")  # segment maps of `elpips geodesic --maps` stay listed
    for directory, run_log, run_frames in runs:
        run_log["files"] = export_path(directory, run_frames, resolved)
        run_log["export"] = resolved.as_dict()
    if kept_maps is not None:
        log["files"]["maps"] = kept_maps
    if compared:
        columns = [(column_label(run_log), run_frames) for _, run_log, run_frames in runs]
        calibrated = all(run_log["weights"].get("calibrated", True) for _, run_log, _ in runs)
        note = None if calibrated else "* random backbone (uncalibrated): distances are not perceptual"
        save_image(run_dir / COMPARISON, comparison_figure(columns, resolved.row, resolved.scale, footnote=note))
        log["files"]["comparison"] = COMPARISON
    elif (run_dir / COMPARISON).exists() and not log.get("compare"):
        (run_dir / COMPARISON).unlink()
    for directory, run_log, _ in runs[1:]:
        write_index(directory, run_log)
        write_json(directory / LOG, run_log)
    write_index(run_dir, log, has_comparison=bool(compared))
    write_json(run_dir / LOG, log)
    return log


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    log = load_log(run_dir)
    settings = settings_from(args, ExportSettings(**log.get("export", {})))
    compared = []
    for entry in log.get("compare", []):
        sub_dir = run_dir / entry["dir"]
        sub_log = load_log(sub_dir)
        compared.append((sub_log, load_frames(sub_dir, sub_log)))
    frames = load_frames(run_dir, log)
    render_run(run_dir, log, frames, settings, compared)
    written = ", ".join(["frames/", *[name for key, name in log["files"].items() if key not in ("frames", "maps")],
                         *(["maps/"] if "maps" in log["files"] else []), "index.html"])
    print(f"re-rendered {run_dir}: {written} (row {log['export']['row']}, scale {log['export']['scale']}, "
          f"{log['export']['fps']:g} fps)")
    return 0
