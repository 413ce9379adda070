"""``elpips interpolate INPUT --factor K --out DIR``: a clip (video, animated GIF, folder or glob of frames) in,
``K - 1`` geodesic in-between frames per pair of consecutive frames out, solved window by window.

Run folder: ``frames/frame_*.png`` (frame ``t K`` is input frame ``t``), ``interpolated.mp4`` (K x the input
frame rate, or the input rate with ``--slow-motion``), ``comparison.mp4`` (side by side with the linear
cross-fade), ``scanline.png`` / ``scanline_comparison.png`` over the whole clip, ``index.html``, ``log.json``,
``plan.json`` (the settings a resume must match) and ``windows/`` (one ``window_*.json`` per finished window, a
``window_*.pt`` checkpoint while one is being solved). ``--resume`` skips finished windows and continues the
checkpointed ones. Under ``torchrun`` the windows are shared out round robin, each solved and written by one rank;
rank 0 renders the exports.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from pathlib import Path

import torch

from elpips import Metric, get_config
from elpips import distributed
from elpips.clips import Clip, open_clip
from elpips.geodesics import SolveSettings, Window, WindowResult, output_count, plan_windows, solve_window
from elpips.geodesics.clip import check_factor
from elpips.geodesics import DEFAULT_BASE_RATE, GeodesicStepInfo
from elpips.io import ensure_output_dir, save_image, write_json
from elpips.solver import reference_learning_rate

from .common import (add_metric_options, add_sizing_options, default_run_dir, metric_label, positive_int,
                     progress_bar, sizing_from, weights_report)
from .render.clip import ClipExport, render_clip
from .render.frames import FRAMES_DIR, default_scale
from .render.viewer import write_index

PLAN = "plan.json"
LOG = "log.json"
WINDOWS_DIR = "windows"
PLAN_FORMAT = "elpips-interpolate-1"


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
    parser.add_argument("--factor", type=int, default=4, help="K: output frames per input frame interval (4)")
    parser.add_argument("--window", type=int, default=2,
                        help="keyframes per window, solved as one path with every keyframe pinned (2: one pair)")
    parser.add_argument("--steps", type=int, default=200, help="optimisation steps per window (200)")
    add_metric_options(parser)
    parser.add_argument("--out", default=None, help="run folder (default outputs/interpolate-DATE-TIME)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--fps", type=float, default=None,
                        help="frame rate of the input (default: the file's; 8 for frames and GIFs without one)")
    parser.add_argument("--slow-motion", action="store_true",
                        help="play the output at the input frame rate (K x longer) instead of K x the rate")
    parser.add_argument("--lr", type=float, default=DEFAULT_BASE_RATE,
                        help=f"base learning rate of the decaying schedule ({DEFAULT_BASE_RATE})")
    parser.add_argument("--no-coarse-to-fine", dest="coarse_to_fine", action="store_false",
                        help="optimise all frames of a window from the start")
    parser.add_argument("--spatial", action="store_true", help="solve the coarse stages at half resolution")
    parser.add_argument("--samples", type=positive_int, default=8,
                        help="ensemble samples for the reported distances (8)")
    parser.add_argument("--chunk", type=positive_int, default=8, help="frames per forward/backward chunk (8)")
    parser.add_argument("--checkpoint-every", type=positive_int, default=25,
                        help="steps between checkpoints of the window being solved (25)")
    parser.add_argument("--row", type=int, default=None, help="scanline row (default: middle)")
    parser.add_argument("--scale", type=int, default=None, help="enlargement of the scanline plots")
    add_sizing_options(parser)
    parser.set_defaults(handler=run)


def check_arguments(args: argparse.Namespace) -> None:
    """Cheap checks before anything is read."""
    check_factor(args.factor)
    plan_windows(2, args.window)  # checks --window
    if args.steps < 0:
        raise ValueError(f"--steps must be >= 0, got {args.steps}")
    if not 0 < args.lr < float("inf"):  # NaN and inf fail too
        raise ValueError(f"--lr must be a finite number > 0, got {args.lr}")
    if args.resume and args.out is None:
        raise ValueError("--resume needs --out DIR (the run to continue)")
    if args.scale is not None and args.scale < 1:
        raise ValueError(f"--scale must be >= 1, got {args.scale}")


def fingerprint(args: argparse.Namespace, clip: Clip) -> dict:
    """What a resumed run must agree on (``seed`` is checked apart: a resume without ``--seed`` takes the plan's)."""
    described = clip.describe()
    return {"format": PLAN_FORMAT, "input": {key: described[key] for key in ("source", "kind", "frames",
                                                                             "size_height_width", "sizing")},
            "factor": args.factor, "window": args.window, "steps": args.steps, "metric": args.metric,
            "backbone_weights": args.backbone_weights, "lr": args.lr, "coarse_to_fine": args.coarse_to_fine,
            "spatial": args.spatial, "samples": args.samples}


def window_marker(run_dir: Path, window: Window) -> Path:
    return run_dir / WINDOWS_DIR / f"window_{window.index:05d}.json"


def window_checkpoint(run_dir: Path, window: Window) -> Path:
    return run_dir / WINDOWS_DIR / f"window_{window.index:05d}.pt"


def frame_path(run_dir: Path, index: int, count: int) -> Path:
    return run_dir / FRAMES_DIR / f"frame_{index:0{max(3, len(str(count - 1)))}d}.png"


def prepare(args: argparse.Namespace, clip: Clip, run_dir: Path) -> tuple:
    """Rank 0: check the folder, write or check ``plan.json``; ``("ok", seed, pending indices)`` or
    ``("error", message)``."""
    try:
        plan_file = run_dir / PLAN
        if args.resume and not plan_file.is_file():
            raise ValueError(f"--resume: no interpolation in '{run_dir}' (no {PLAN})")
        ensure_output_dir(run_dir)
        expected = fingerprint(args, clip)
        if plan_file.is_file():
            if not args.resume:
                raise ValueError(f"'{run_dir}' already holds an interpolation: pass --resume to continue it, or "
                                 "choose another --out")
            stored = json.loads(plan_file.read_text(encoding="utf-8"))
            differing = sorted(key for key in expected if stored.get(key) != expected[key])
            if args.seed is not None and stored.get("seed") != args.seed:
                differing.append("seed")
            if differing:
                raise ValueError(f"'{run_dir}' was started with other settings ({', '.join(differing)} differ): "
                                 "resuming needs the same input and options")
            seed = int(stored["seed"])
        else:
            seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
            write_json(plan_file, {**expected, "seed": seed})
        windows = plan_windows(clip.count, args.window)
        pending = [window.index for window in windows if not window_marker(run_dir, window).is_file()]
    except (ValueError, OSError) as error:
        return ("error", str(error))
    return ("ok", seed, pending)


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


def write_window(run_dir: Path, result: WindowResult, clip: Clip, factor: int, rank: int, world: int) -> None:
    """The window's frames, then its marker (last, atomically), then drop its checkpoint."""
    window, total = result.window, output_count(clip.count, factor)
    start, stop = window.owned(factor, clip.count)
    for offset, frame in enumerate(result.owned_frames(factor, clip.count)):
        save_image(frame_path(run_dir, start + offset, total), frame)
    write_json(window_marker(run_dir, window), {
        "window": window.index, "first": window.first, "last": window.last, "frames": [start, stop],
        "rank": rank, "world_size": world, "energy": result.energy, "crossfade_energy": result.crossfade_energy,
        "distances": result.distances.tolist(), "half_widths": result.half_widths.tolist(),
        "samples": result.samples, "solve_s": round(result.solve_seconds, 3), "resumed_from": result.resumed_from,
    })
    window_checkpoint(run_dir, window).unlink(missing_ok=True)


def solve_mine(args: argparse.Namespace, clip: Clip, run_dir: Path, seed: int, mine: list[Window],
               metric: Metric, rank: int, world: int) -> None:
    """Solve and write this process's windows, one at a time (each alone on this rank: no sharding)."""
    settings = SolveSettings(steps=args.steps, lr=lambda step: reference_learning_rate(step, args.lr),
                             coarse_to_fine=args.coarse_to_fine, spatial=args.spatial, chunk_size=args.chunk,
                             eval_samples=args.samples, checkpoint_every=args.checkpoint_every)
    progress = WindowProgress(f"[rank {rank}/{world}] " if world > 1 else "", len(plan_windows(clip.count,
                                                                                               args.window)))
    for window in mine:
        checkpoint = window_checkpoint(run_dir, window)
        with distributed.local_scope():
            keyframes = clip.frames(window.first, window.last + 1)
            result = solve_window(metric, keyframes, window, args.factor, seed, settings, checkpoint,
                                  resume=checkpoint.is_file(), callback=progress)
            write_window(run_dir, result, clip, args.factor, rank, world)
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
    check_arguments(args)
    began = time.perf_counter()
    clip = open_clip(args.input, sizing_from(args), args.fps, min_size=get_config(args.metric).min_size)
    scanline_row(args, clip)
    # before anything is written: unusable weights must not leave a half-started run behind
    metric = Metric(args.metric, backbone_weights=args.backbone_weights, device=args.device, seed=args.seed,
                    memory_budget=args.memory_budget)
    run_dir = Path(args.out) if args.out else default_run_dir("interpolate")
    rank, world = distributed.rank_and_world()
    run_dir = distributed.broadcast_object(run_dir)  # rank 0's folder name (a timestamp)
    plan = distributed.broadcast_object(prepare(args, clip, run_dir) if rank == 0 else None)
    if plan[0] == "error":
        raise ValueError(plan[1])
    _, seed, pending = plan
    windows = plan_windows(clip.count, args.window)
    mine = distributed.round_robin([windows[index] for index in pending], rank, world)
    if rank == 0:
        if not metric.calibrated:
            print(f"note: {metric.weights_info.description}", file=sys.stderr)
        print(f"{clip.count} frames, {len(windows)} windows, {len(windows) - len(pending)} already done, "
              f"{len(pending)} to solve on {world} process{'es' if world > 1 else ''}; outputs in {run_dir}/",
              file=sys.stderr)
    problem = None
    try:
        solve_mine(args, clip, run_dir, seed, mine, metric, rank, world)
    except KeyboardInterrupt:
        print(f"interrupted: finished windows are kept; continue with --resume --out {run_dir}", file=sys.stderr)
        raise
    except (ValueError, OSError, RuntimeError) as error:  # the other ranks must not wait for this one forever
        problem = f"rank {rank}: {error}"
    problems = [text for text in distributed.gather_objects(problem) if text]
    if problems:
        raise ValueError("; ".join(problems) + f" (finished windows are kept: rerun with --resume --out {run_dir})")
    if rank == 0:
        finish(args, clip, run_dir, seed, metric, world, began)
    return 0


def scanline_row(args: argparse.Namespace, clip: Clip) -> int:
    """``--row`` (default: the middle row), checked against the frames' height."""
    height = clip.size[0]
    row = height // 2 if args.row is None else args.row
    if not 0 <= row < height:
        raise ValueError(f"--row {row} is outside the frames: choose 0..{height - 1}")
    return row


def finish(args: argparse.Namespace, clip: Clip, run_dir: Path, seed: int, metric: Metric, world: int,
           began: float) -> None:
    """Rank 0, every window written: render the exports, the viewer and ``log.json``."""
    windows = plan_windows(clip.count, args.window)
    markers = [json.loads(window_marker(run_dir, window).read_text(encoding="utf-8")) for window in windows]
    total = output_count(clip.count, args.factor)
    frame_paths = [frame_path(run_dir, index, total) for index in range(total)]
    missing = [path.name for path in frame_paths if not path.is_file()]
    if missing:
        raise ValueError(f"'{run_dir}' misses frames ({', '.join(missing[:3])} ...): rerun with --resume")
    row = scanline_row(args, clip)
    scale = default_scale(clip.size[1]) if args.scale is None else args.scale
    fps = clip.fps if args.slow_motion else clip.fps * args.factor
    started = time.perf_counter()
    files = render_clip(run_dir, frame_paths, ClipExport(args.factor, fps, row, scale, metric_label(metric)))
    log = summarize(args, clip, seed, metric, world, markers, fps)
    log["files"] = {"frames": [f"{FRAMES_DIR}/{path.name}" for path in frame_paths], **files}
    log["export"] = {"row": row, "scale": scale, "fps": fps, "pingpong": False}
    write_index(run_dir, log)
    log["timings"].update(export_s=round(time.perf_counter() - started, 3),
                          wall_s_this_call=round(time.perf_counter() - began, 3))
    write_json(run_dir / LOG, log)
    result = log["result"]
    print(f"{metric_label(metric)}: {clip.count} frames -> {total} frames (x{args.factor}), energy "
          f"{result['energy']:.5g} (linear cross-fade {result['linear_energy']:.5g}), "
          f"{log['timings']['seconds_per_interpolated_frame']:.3g} s per new frame")
    print(f"wrote {run_dir}/: frames/ ({total} PNGs), " + ", ".join(name for key, name in files.items())
          + ", index.html, log.json")


def summarize(args: argparse.Namespace, clip: Clip, seed: int, metric: Metric, world: int, markers: list[dict],
              fps: float) -> dict:
    """``log.json`` without the exports."""
    solve_seconds = sum(marker["solve_s"] for marker in markers)
    new_frames = (clip.count - 1) * (args.factor - 1)
    return {
        "kind": "interpolate",
        "title": f"Interpolated {clip.source} x{args.factor} ({metric.name})",
        "options": {key: value for key, value in vars(args).items() if key != "handler"},
        "input": clip.describe(),
        "keyframes": [clip.source],
        "size": list(clip.size),
        "factor": args.factor,
        "frames": output_count(clip.count, args.factor),
        "keyframe_indices": [index * args.factor for index in range(clip.count)],
        "steps": args.steps,
        "seed": seed,
        "device": str(metric.device),
        "processes": world,
        "weights": weights_report(metric),
        "video": {"fps": fps, "input_fps": clip.fps, "slow_motion": args.slow_motion,
                  "duration_s": round(output_count(clip.count, args.factor) / fps, 3)},
        "solver": {"keyframes_per_window": args.window, "windows": len(markers),
                   "schedule": f"{args.lr} / (1 + 0.02 t'^0.75), t' = sqrt(100^2 + t^2) - 100",
                   "coarse_to_fine": args.coarse_to_fine, "spatial": args.spatial, "chunk_size": args.chunk},
        "result": {
            "energy": sum(marker["energy"] for marker in markers),
            "linear_energy": sum(marker["crossfade_energy"] for marker in markers),
            "samples": markers[0]["samples"],
            "distances": [value for marker in markers for value in marker["distances"]],
            "half_widths": [value for marker in markers for value in marker["half_widths"]],
        },
        "windows": [{key: marker[key] for key in ("window", "first", "last", "rank", "energy", "crossfade_energy",
                                                  "solve_s", "resumed_from")} for marker in markers],
        "timings": {"solve_s": round(solve_seconds, 3),
                    "seconds_per_interpolated_frame": round(solve_seconds / new_frames, 4)},
    }
