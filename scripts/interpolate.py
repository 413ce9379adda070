"""``elpips interpolate INPUT --factor K --out DIR``: a clip (video, animated GIF, folder or glob of frames) in,
``K - 1`` geodesic in-between frames per pair of consecutive frames out, solved window by window.

Run folder (owned through :class:`~elpips.scripts.run_folder.RunFolder`: refused when it holds a run unless
resuming, locked while the run runs): ``frames/frame_*.png`` (frame ``t K`` is input frame ``t``),
``interpolated.mp4`` (K x the input frame rate, or the input rate with ``--slow-motion``), ``comparison.mp4``
(side by side with the linear cross-fade), ``scanline.png`` / ``scanline_comparison.png`` over the whole clip,
``index.html``, ``log.json``, ``run.json`` (the run's record: the clip, the solver options, the metric with its
ensemble, the seed; a resume must repeat it) and ``windows/`` (one ``window_*.json`` per finished window, a
``window_*.pt`` checkpoint while one is being solved). ``--resume`` skips finished windows and continues the
checkpointed ones bit-exactly.

Window ``i`` draws its ensemble samples from a generator seeded with
:func:`~elpips.geodesics.clip.window_seed` ``(seed, i)`` and its reported distances from the next integer, so its
frames depend on the run's seed and its index only (not on the process that solves it, the order, or a resume);
its marker records that seed.

Under ``torchrun`` rank 0 checks, records and locks the folder; the windows are shared out round robin, each
solved and written by one rank; a failure on any rank stops every rank, naming it; rank 0 renders the exports.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from elpips import Metric, distributed, get_config
from elpips.clips import Clip, open_clip
from elpips.geodesics import (
    DEFAULT_BASE_RATE,
    GeodesicStepInfo,
    SolveSettings,
    Window,
    WindowResult,
    output_count,
    plan_windows,
    solve_window,
)
from elpips.geodesics.clip import check_factor, check_keyframes_per_window, window_seed
from elpips.io import OutputWriteError, save_image, write_json
from elpips.sizing import Sizing
from elpips.solver import reference_learning_rate
from elpips.textures import seam_statistic

from .common import (
    add_averaging_option,
    add_metric_options,
    add_sizing_options,
    default_run_dir,
    make_metric,
    metric_label,
    positive_int,
    progress_bar,
    run_record,
    sizing_from,
    weights_report,
)
from .render.clip import ClipExport, render_clip
from .render.frames import FRAMES_DIR, default_scale
from .render.viewer import write_index
from .run_folder import RunFolder

LOG = "log.json"
WINDOWS_DIR = "windows"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "interpolate",
        description="Put K-1 new frames on the geodesic between every pair of consecutive frames of a video, an "
                    "animated GIF, or a folder / glob of frames (quote the glob), window by window, and write the "
                    "frames, a video at K x the frame rate, a side-by-side video against the linear cross-fade, "
                    "scanline plots, index.html and log.json. Under torchrun the windows are shared out between "
                    "the processes.",
    )
    parser.add_argument("input", metavar="INPUT", help="video file, animated GIF, folder of frames, or glob pattern")
    parser.add_argument("--factor", type=int, default=4, help="K: output frames per input frame interval")
    parser.add_argument("--window", type=int, default=2,
                        help="keyframes per window, solved as one path with every keyframe pinned; 2 is one pair")
    parser.add_argument("--steps", type=int, default=200, help="optimisation steps per window")
    add_metric_options(parser)
    run_options = parser.add_argument_group("run folder")
    run_options.add_argument("--out", default=None, help="run folder (default outputs/interpolate-DATE-TIME)")
    run_options.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--fps", type=float, default=None,
                        help="frame rate of the input (default: the file's; 8 for frames and GIFs without one)")
    parser.add_argument("--slow-motion", action="store_true",
                        help="play the output at the input frame rate (K x longer) instead of K x the rate")
    parser.add_argument("--lr", type=float, default=DEFAULT_BASE_RATE,
                        help="base learning rate of the decaying schedule")
    parser.add_argument("--no-coarse-to-fine", dest="coarse_to_fine", action="store_false",
                        help="optimise all frames of a window from the start")
    parser.add_argument("--spatial", action="store_true", help="solve the coarse stages at half resolution")
    add_averaging_option(parser)
    parser.add_argument("--samples", type=positive_int, default=8,
                        help="ensemble samples for the reported distances")
    parser.add_argument("--chunk", type=positive_int, default=8, help="frames per forward/backward chunk")
    parser.add_argument("--checkpoint-every", type=positive_int, default=25,
                        help="steps between checkpoints of the window being solved")
    parser.add_argument("--row", type=int, default=None, help="scanline row (default: middle)")
    parser.add_argument("--scale", type=int, default=None, help="enlargement of the scanline plots")
    add_sizing_options(parser)
    parser.set_defaults(handler=run)


@dataclass(frozen=True)
class InterpolateSettings:
    """The command's own options, parsed and checked once (the metric's options go to
    :func:`~elpips.scripts.common.make_metric`, the folder's to :class:`RunFolder`).

    Attributes:
        input: the clip as given; sizing: how its frames are brought to one size; input_fps: ``--fps`` (``None``:
            the clip's own rate).
        factor, window, steps, lr, coarse_to_fine, spatial, average_last, samples, chunk, checkpoint_every: the
            solver's (``average_last`` ``None``: the solver's choice for the metric).
        row, scale, slow_motion: the exports' (``None``: the middle row, the default enlargement).
    """

    input: str
    sizing: Sizing
    input_fps: float | None
    factor: int
    window: int
    steps: int
    lr: float
    coarse_to_fine: bool
    spatial: bool
    average_last: float | None
    samples: int
    chunk: int
    checkpoint_every: int
    row: int | None
    scale: int | None
    slow_motion: bool

    @classmethod
    def parse(cls, args: argparse.Namespace) -> InterpolateSettings:
        """The settings of the command line (``ValueError`` for a bad option, before anything is read)."""
        check_factor(args.factor, "--factor")
        check_keyframes_per_window(args.window, "--window")
        if args.fps is not None and not args.fps > 0:  # NaN fails too
            raise ValueError(f"--fps must be > 0, got {args.fps}")
        if args.steps < 0:
            raise ValueError(f"--steps must be >= 0, got {args.steps}")
        if not 0 < args.lr < float("inf"):  # NaN and inf fail too
            raise ValueError(f"--lr must be a finite number > 0, got {args.lr}")
        if args.resume and args.out is None:
            raise ValueError("--resume needs --out DIR (the run to continue)")
        if args.scale is not None and args.scale < 1:
            raise ValueError(f"--scale must be >= 1, got {args.scale}")
        return cls(input=args.input, sizing=sizing_from(args), input_fps=args.fps, factor=args.factor,
                   window=args.window, steps=args.steps, lr=args.lr, coarse_to_fine=args.coarse_to_fine,
                   spatial=args.spatial, average_last=args.average_last, samples=args.samples, chunk=args.chunk,
                   checkpoint_every=args.checkpoint_every, row=args.row, scale=args.scale,
                   slow_motion=args.slow_motion)

    def solver(self) -> SolveSettings:
        """The per-window solver options."""
        base = self.lr
        return SolveSettings(steps=self.steps, lr=lambda step: reference_learning_rate(step, base),
                             coarse_to_fine=self.coarse_to_fine, spatial=self.spatial, chunk_size=self.chunk,
                             eval_samples=self.samples, checkpoint_every=self.checkpoint_every,
                             average_last=self.average_last)

    def determining(self, clip: Clip) -> dict[str, Any]:
        """What determines the frames besides the metric and the seed (the run's record holds it)."""
        described = clip.describe()
        return {"input": {key: described[key] for key in ("source", "kind", "frames", "size_height_width",
                                                          "sizing")},
                "factor": self.factor, "window": self.window, "steps": self.steps, "lr": self.lr,
                "coarse_to_fine": self.coarse_to_fine, "spatial": self.spatial, "average_last": self.average_last,
                "samples": self.samples}

    def scanline_row(self, clip: Clip) -> int:
        """``--row`` (default: the middle row), checked against the frames' height."""
        height = clip.size[0]
        row = height // 2 if self.row is None else self.row
        if not 0 <= row < height:
            raise ValueError(f"--row {row} is outside the frames: choose 0..{height - 1}")
        return row

    def export(self, clip: Clip, label: str) -> ClipExport:
        """What the renderer draws: the videos' rate, the scanline row and enlargement."""
        fps = clip.fps if self.slow_motion else clip.fps * self.factor
        scale = default_scale(clip.size[1]) if self.scale is None else self.scale
        return ClipExport(self.factor, fps, self.scanline_row(clip), scale, label)

    def as_dict(self) -> dict[str, Any]:
        """The options as ``log.json`` records them."""
        return {**asdict(self), "sizing": self.sizing.as_dict()}


def window_marker(run_dir: Path, window: Window) -> Path:
    return run_dir / WINDOWS_DIR / f"window_{window.index:05d}.json"


def window_checkpoint(run_dir: Path, window: Window) -> Path:
    return run_dir / WINDOWS_DIR / f"window_{window.index:05d}.pt"


def frame_path(run_dir: Path, index: int, count: int) -> Path:
    return run_dir / FRAMES_DIR / f"frame_{index:0{max(3, len(str(count - 1)))}d}.png"


class WindowProgress:
    """Steps: the shared progress report (a bar on a terminal, else plain lines every 10% or 10 s). Windows: one
    line each on stderr."""

    def __init__(self, tag: str, total_windows: int) -> None:
        self.tag, self.total, self.done, self.started = tag, total_windows, 0, time.perf_counter()
        self.bar = None

    def __call__(self, info: GeodesicStepInfo) -> None:
        if self.bar is None:
            self.bar = progress_bar(f"{self.tag}window {self.done + 1}", info.total_steps)
            self.bar.unit = "step"
        self.bar.update(info.step - self.bar.n)
        self.bar.set_postfix(energy=f"{info.energy:.4g}")

    def window_done(self, result: WindowResult, count: int) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.done += 1
        elapsed = time.perf_counter() - self.started
        eta = elapsed / self.done * (count - self.done)
        window = result.window
        print(f"{self.tag}window {window.index + 1}/{self.total} (frames {window.first}-{window.last}) done in "
              f"{result.solve_seconds:.1f} s: energy {result.energy:.4g} (cross-fade {result.crossfade_energy:.4g})"
              f"; {self.done}/{count} of this process, ETA {eta:.0f} s", file=sys.stderr)


def write_window(run_dir: Path, result: WindowResult, clip: Clip, factor: int, seed: int, rank: int,
                 world: int) -> None:
    """The window's frames, then its marker (last, atomically), then drop its checkpoint."""
    window, total = result.window, output_count(clip.count, factor)
    start, stop = window.owned(factor, clip.count)
    seams = []
    for offset, frame in enumerate(result.owned_frames(factor, clip.count)):
        save_image(frame_path(run_dir, start + offset, total), frame)
        seams.append(float(seam_statistic(frame.reshape(1, *frame.shape[-3:]))[0]))
    write_json(window_marker(run_dir, window), {
        "window": window.index, "first": window.first, "last": window.last, "frames": [start, stop],
        "seed": window_seed(seed, window.index), "rank": rank, "world_size": world, "energy": result.energy,
        "crossfade_energy": result.crossfade_energy, "distances": result.distances.tolist(),
        "half_widths": result.half_widths.tolist(), "samples": result.samples,
        "solve_s": round(result.solve_seconds, 3), "resumed_from": result.resumed_from, "seam_statistic": seams,
    })
    window_checkpoint(run_dir, window).unlink(missing_ok=True)


def solve_mine(settings: InterpolateSettings, clip: Clip, run_dir: Path, seed: int, mine: list[Window],
               metric: Metric, rank: int, world: int) -> None:
    """Solve and write this process's windows, one at a time (each alone on this rank: no sharding)."""
    solver = settings.solver()
    progress = WindowProgress(f"[rank {rank}/{world}] " if world > 1 else "",
                              len(plan_windows(clip.count, settings.window)))
    for window in mine:
        checkpoint = window_checkpoint(run_dir, window)
        with distributed.local_scope():
            keyframes = clip.frames(window.first, window.last + 1)
            result = solve_window(keyframes, metric, window=window, factor=settings.factor, seed=seed,
                                  settings=solver, checkpoint=checkpoint, resume=checkpoint.is_file(),
                                  callback=progress)
            write_window(run_dir, result, clip, settings.factor, seed, rank, world)
        progress.window_done(result, len(mine))


def run(args: argparse.Namespace) -> int:
    """Launched by torchrun, the processes join one (gloo) group and share the windows out; inside a group that
    is already running (``elpips batch``), this is one job of one rank and runs every window itself."""
    if distributed.launched_by_torchrun() and not torch.distributed.is_initialized():
        with distributed.process_group(args.device, backend="gloo") as device:
            args.device = str(device)
            return _run(args)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    began = time.perf_counter()
    settings = InterpolateSettings.parse(args)
    folder = RunFolder(args.out or default_run_dir("interpolate"), "interpolate", resume=args.resume,
                       argv=getattr(args, "argv", None))
    clip = open_clip(settings.input, settings.sizing, settings.input_fps, min_size=get_config(args.metric).min_size)
    settings.scanline_row(clip)
    seed = folder.agree(lambda folder: (folder.check(), folder.seed(args.seed))[1])
    # before anything is written: unusable weights or ensemble options must not leave a half-started run behind
    metric = make_metric(args, seed=seed, announce=distributed.is_main_process())
    record = folder.agree(lambda folder: folder.settings(run_record(args, [metric], seed,
                                                                    **settings.determining(clip))))
    with folder.claim(record):
        solve_and_export(settings, clip, folder.path, seed, metric, began)
    return 0


def solve_and_export(settings: InterpolateSettings, clip: Clip, run_dir: Path, seed: int, metric: Metric,
                     began: float) -> None:
    """Inside the claimed folder: share the windows not yet done out between the ranks, solve and write them,
    then (rank 0) render the exports."""
    rank, world = distributed.rank_and_world()
    windows = plan_windows(clip.count, settings.window)
    pending = distributed.broadcast_object(  # rank 0's view of the folder
        [window.index for window in windows if not window_marker(run_dir, window).is_file()] if rank == 0 else None)
    mine = distributed.round_robin([windows[index] for index in pending], rank, world)
    if rank == 0:
        print(f"{clip.count} frames, {len(windows)} windows, {len(windows) - len(pending)} already done, "
              f"{len(pending)} to solve on {world} process{'es' if world > 1 else ''}; outputs in {run_dir}/",
              file=sys.stderr)
    on_every_rank(run_dir, lambda: solve_mine(settings, clip, run_dir, seed, mine, metric, rank, world))
    on_every_rank(run_dir, lambda: finish(settings, clip, run_dir, seed, metric, world, began) if rank == 0 else None)


def on_every_rank(run_dir: Path, work: Callable[[], Any]) -> None:
    """``work()``, then fail on every rank if it failed on one (no rank waits for one that has stopped): the
    failing rank with its own error, the others naming that rank. An OS write error becomes one
    :class:`OutputWriteError` naming the run folder first, on the rank that had it."""
    failure = None
    try:
        work()
    except OutputWriteError as error:
        failure = error
    except OSError as error:
        cause = (error.strerror or os.strerror(error.errno)) if error.errno else str(error)
        failure = OutputWriteError(f"cannot write to '{run_dir}': {cause}")
    except Exception as error:  # noqa: BLE001 - re-raised below, on this rank as it is
        failure = error
    distributed.raise_on_every_rank(failure)


def finish(settings: InterpolateSettings, clip: Clip, run_dir: Path, seed: int, metric: Metric, world: int,
           began: float) -> None:
    """Rank 0, every window written: render the exports, the viewer and ``log.json``."""
    windows = plan_windows(clip.count, settings.window)
    markers = [json.loads(window_marker(run_dir, window).read_text(encoding="utf-8")) for window in windows]
    total = output_count(clip.count, settings.factor)
    frame_paths = [frame_path(run_dir, index, total) for index in range(total)]
    missing = [path.name for path in frame_paths if not path.is_file()]
    if missing:
        raise ValueError(f"'{run_dir}' misses frames ({', '.join(missing[:3])} ...): rerun with --resume")
    export = settings.export(clip, metric_label(metric))
    started = time.perf_counter()
    files = render_clip(run_dir, frame_paths, export)
    log = summarize(settings, clip, seed, metric, world, markers, export.fps)
    log["files"] = {"frames": [f"{FRAMES_DIR}/{path.name}" for path in frame_paths], **files}
    log["export"] = {"row": export.row, "scale": export.scale, "fps": export.fps, "pingpong": False}
    write_index(run_dir, log)
    log["timings"].update(export_s=round(time.perf_counter() - started, 3),
                          wall_s_this_call=round(time.perf_counter() - began, 3))
    write_json(run_dir / LOG, log)
    result = log["result"]
    print(f"{metric_label(metric)}: {clip.count} frames -> {total} frames (x{settings.factor}), energy "
          f"{result['energy']:.5g} (linear cross-fade {result['linear_energy']:.5g}), "
          f"{log['timings']['seconds_per_interpolated_frame']:.3g} s per new frame")
    print(f"wrote {run_dir}/: frames/ ({total} PNGs), " + ", ".join(name for key, name in files.items())
          + ", index.html, log.json")


def summarize(settings: InterpolateSettings, clip: Clip, seed: int, metric: Metric, world: int,
              markers: list[dict], fps: float) -> dict:
    """``log.json`` without the exports."""
    solve_seconds = sum(marker["solve_s"] for marker in markers)
    factor = settings.factor
    new_frames = (clip.count - 1) * (factor - 1)
    return {
        "kind": "interpolate",
        "title": f"interpolated {Path(str(clip.source)).name} x{factor} ({metric.name})",
        "options": settings.as_dict(),
        "input": clip.describe(),
        "keyframes": [clip.source],
        "size": list(clip.size),
        "factor": factor,
        "frames": output_count(clip.count, factor),
        "keyframe_indices": [index * factor for index in range(clip.count)],
        "steps": settings.steps,
        "seed": seed,
        "device": str(metric.device),
        "processes": world,
        "weights": weights_report(metric),
        "video": {"fps": fps, "input_fps": clip.fps, "slow_motion": settings.slow_motion,
                  "duration_s": round(output_count(clip.count, factor) / fps, 3)},
        "solver": {"keyframes_per_window": settings.window, "windows": len(markers),
                   "schedule": f"{settings.lr} / (1 + 0.02 t'^0.75), t' = sqrt(100^2 + t^2) - 100",
                   "coarse_to_fine": settings.coarse_to_fine, "spatial": settings.spatial,
                   "chunk_size": settings.chunk},
        "result": {
            "energy": sum(marker["energy"] for marker in markers),
            "linear_energy": sum(marker["crossfade_energy"] for marker in markers),
            "samples": markers[0]["samples"],
            "distances": [value for marker in markers for value in marker["distances"]],
            "half_widths": [value for marker in markers for value in marker["half_widths"]],
            "seam_statistic": [value for marker in markers for value in marker.get("seam_statistic", [])],
        },
        "windows": [{key: marker.get(key) for key in ("window", "first", "last", "seed", "rank", "energy",
                                                      "crossfade_energy", "solve_s", "resumed_from")}
                    for marker in markers],
        "timings": {"solve_s": round(solve_seconds, 3),
                    "seconds_per_interpolated_frame": round(solve_seconds / new_frames, 4)},
    }
