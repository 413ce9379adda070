"""``elpips geodesic A B [C ...]``: solve a discrete geodesic (a perceptual spline through more keyframes) and
write every export into a run directory; ``--compare`` solves the same path under other metrics too."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from elpips import METRIC_NAMES, Metric, get_config
from elpips.distributed import broadcast_object, is_distributed, is_main_process, launched_by_torchrun, process_group
from elpips.geodesics import (
    DEFAULT_BASE_RATE,
    GeodesicResult,
    evaluate_path,
    linear_path,
    path_shard,
    segment_intervals,
    solve,
)
from elpips.io import write_json
from elpips.sizing import load_sized_images
from elpips.solver import CHECKPOINT_NAME, phase, reference_learning_rate
from elpips.spatial import distance_map
from elpips.textures import seam_statistic

from .common import (
    add_averaging_option,
    add_export_options,
    add_metric_options,
    add_sizing_options,
    calibration_label,
    check_ensemble_options,
    default_run_dir,
    make_metric,
    positive_int,
    run_record,
    samples_text,
    settings_from,
    sizing_from,
    weights_report,
)
from .distance import check_map_metric
from .render.frames import FRAMES_DIR, ExportSettings, frame_names, frames_to_uint8
from .render.heatmaps import color_limit, write_segment_maps
from .render.run import LOG, render_run
from .render.viewer import write_index
from .run_folder import RunFolder


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "geodesic",
        description="Find the path A = x_0, ..., x_K = B minimising sum_k d(x_k, x_{k+1})^2 and export frames, "
                    "scanline plots, GIF/MP4 animations and an index.html viewer. With more images the path "
                    "passes through each of them. Under torchrun (torchrun --nproc-per-node=G -m elpips geodesic "
                    "...) the frames are split over the G processes; rank 0 writes the outputs.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="keyframes A B [C ...] (or example:NAME)")
    parser.add_argument("--frames", type=int, default=10, help="frames on the path, keyframes included")
    parser.add_argument("--steps", type=int, default=500, help="optimisation steps, all stages together")
    add_metric_options(parser)
    parser.add_argument("--compare", default="", metavar="M1,M2",
                        help="also solve under these metrics (e.g. lpips-vgg,l2) and draw comparison.png")
    run_options = parser.add_argument_group("run folder")
    run_options.add_argument("--out", default=None, help="run directory (default outputs/geodesic-DATE-TIME)")
    run_options.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoints")
    parser.add_argument("--lr", type=float, default=DEFAULT_BASE_RATE,
                        help="base learning rate of the decaying schedule")
    parser.add_argument("--no-coarse-to-fine", dest="coarse_to_fine", action="store_false",
                        help="optimise all frames from the start instead of subdividing")
    parser.add_argument("--spatial", action="store_true", help="solve the coarse stages at half resolution")
    add_averaging_option(parser)
    parser.add_argument("--samples", type=positive_int, default=16,
                        help="ensemble samples for the reported distances")
    parser.add_argument("--chunk", type=positive_int, default=8, help="frames per forward/backward chunk")
    parser.add_argument("--checkpoint-every", type=positive_int, default=25, help="steps between checkpoints")
    parser.add_argument("--maps", action="store_true",
                        help="add per-segment distance maps (where consecutive frames change, --samples samples, "
                             "one colour range) to the viewer: maps/segment_NNN.png and maps/values.npy")
    add_export_options(parser)
    add_sizing_options(parser)
    parser.set_defaults(handler=run)


def compare_names(text: str, main: str) -> list[str]:
    """``"lpips-vgg, l2"`` -> ``["lpips-vgg", "l2"]``; unknown or repeated names are errors."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if name not in METRIC_NAMES:
            raise ValueError(f"--compare: unknown metric {name!r}; choose from: {', '.join(METRIC_NAMES)}")
    if len(set(names)) != len(names) or main in names:
        raise ValueError(f"--compare lists a metric twice (or the main metric {main})")
    return names


def check_arguments(args: argparse.Namespace) -> list[str]:
    """Cheap checks before any weights are loaded; returns the compared metrics."""
    compared = compare_names(args.compare, args.metric)
    check_ensemble_options(args, [args.metric, *compared])
    sizing_from(args)  # a bad --resize fails before anything is read
    segment_intervals(args.frames, len(args.images))
    if args.steps < 0:
        raise ValueError(f"--steps must be >= 0, got {args.steps}")
    if not 0 < args.lr < float("inf"):  # NaN and inf fail too
        raise ValueError(f"--lr must be a finite number > 0, got {args.lr}")
    if args.fps is not None and not args.fps > 0:
        raise ValueError(f"--fps must be > 0, got {args.fps}")
    if args.row is not None and args.row < 0:
        raise ValueError(f"--row must be >= 0, got {args.row}")
    if args.resume and args.out is None:
        raise ValueError("--resume needs --out DIR (the run to continue)")
    if args.maps:
        check_map_metric(args.metric)
    return compared


def record(args: argparse.Namespace, metrics: list[Metric], seed: int) -> dict:
    """The run's record: what determines the result (a resume must repeat it)."""
    return run_record(args, metrics, seed, images=list(args.images), frames=args.frames, steps=args.steps,
                      lr=args.lr, coarse_to_fine=args.coarse_to_fine, spatial=args.spatial,
                      average_last=args.average_last, samples=args.samples)


def solve_one(args: argparse.Namespace, metric: Metric, keys: torch.Tensor, run_dir: Path,
              seed: int) -> tuple[dict, torch.Tensor]:
    """Solve under ``metric`` with its checkpoint in ``run_dir``; returns its log (without exports) and the
    frames ``[K+1, 3, H, W]``. With ``--resume`` a path whose checkpoint is missing (the run was stopped before
    its first checkpoint) starts afresh."""
    checkpoint = run_dir / CHECKPOINT_NAME
    resume = broadcast_object(args.resume and checkpoint.is_file())  # rank 0's view of the run folder
    keys = keys.to(metric.device)
    sharded = is_distributed()
    base = args.lr
    started = time.perf_counter()
    result = solve(keys, metric, frames=args.frames, steps=args.steps,
                   lr=lambda step: reference_learning_rate(step, base),
                   generator=torch.Generator().manual_seed(seed), checkpoint=checkpoint,
                   checkpoint_every=args.checkpoint_every, resume=resume,
                   progress=True,  # one progress report per run: rank 0's
                   chunk_size=args.chunk, eval_samples=args.samples, coarse_to_fine=args.coarse_to_fine,
                   spatial=args.spatial, eval_generator=torch.Generator().manual_seed(seed + 1), shard=sharded,
                   average_last=args.average_last)
    solve_seconds = time.perf_counter() - started
    if result.note is not None and is_main_process():
        print(f"note: {result.note}", file=sys.stderr)
    # the linear blend under the same seeded samples as the solved path's distances: a paired comparison
    linear_frames = linear_path(keys, result.intervals)
    with phase(f"{metric.name}: distances along the linear blend", enabled=is_main_process()):
        linear = evaluate_path(metric, linear_frames, args.samples, torch.Generator().manual_seed(seed + 1),
                               chunk_size=args.chunk,
                               shard=path_shard(linear_frames.shape[0]) if sharded else None)
    return summarize(args, metric, result, linear.energy, seed, solve_seconds), result.frames


def summarize(args: argparse.Namespace, metric: Metric, result: GeodesicResult, linear_energy: float, seed: int,
              solve_seconds: float) -> dict:
    """The run's ``log.json`` content (exports are added by :func:`~elpips.scripts.render.run.render_run`)."""
    return {
        "kind": "geodesic",
        "options": {key: value for key, value in vars(args).items() if key not in ("handler", "argv")},
        "keyframes": list(args.images),
        "size": list(result.frames.shape[-2:]),
        "frames": int(result.frames.shape[0]),
        "intervals": list(result.intervals),
        "keyframe_indices": result.keyframe_indices,
        "steps": args.steps,
        "seed": seed,
        "device": str(metric.device),
        "processes": torch.distributed.get_world_size() if is_distributed() else 1,
        "weights": weights_report(metric),
        "solver": {
            "schedule": f"{args.lr} / (1 + 0.02 t'^0.75), t' = sqrt(100^2 + t^2) - 100",
            "coarse_to_fine": args.coarse_to_fine, "spatial": args.spatial, "chunk_size": args.chunk,
            "levels": [{"frames": level.frames, "intervals": list(level.intervals), "scale": level.scale,
                        "steps": level.steps} for level in result.levels],
        },
        "energy_history": result.energy_history,
        "result": {
            "energy": result.energy, "linear_energy": linear_energy, "samples": result.samples,
            "start_energy": result.start_energy, "note": result.note,
            "distances": result.distances.tolist(), "half_widths": result.half_widths.tolist(),
            "speed_spread": result.speed_spread(), "length": float(result.distances.sum()),
            "seam_statistic": seam_statistic(result.frames).tolist(),
        },
        "timings": {"solve_s": round(solve_seconds, 3), "step_s_mean": round(result.step_seconds, 4),
                    "resumed_from_step": result.resumed_from},
    }


def report(log: dict, label: str) -> str:
    """Two lines of summary for stdout."""
    result = log["result"]
    spread = ", ".join(f"{100 * s:.1f}%" for s in result["speed_spread"])
    distances = " ".join(f"{d:.4g}" for d in result["distances"])
    return (f"{label}: energy {result['energy']:.5g} (linear blend {result['linear_energy']:.5g}, "
            f"{samples_text(result['samples'])}), speed spread per segment {spread}, "
            f"{log['timings']['solve_s']:.1f} s\n"
            f"  distances: {distances}")


def run(args: argparse.Namespace) -> int:
    """Solve and export. Launched by torchrun, the processes join one group and shard the path; inside a
    group that is already running (``elpips batch``), this is one job of one rank and runs unsharded."""
    if launched_by_torchrun() and not torch.distributed.is_initialized():
        with process_group(args.device) as device:
            args.device = str(device)
            return _run(args)
    return _run(args)


def add_segment_maps(args: argparse.Namespace, frames: torch.Tensor, run_dir: Path, log: dict, seed: int) -> None:
    """Distance maps of every pair of consecutive frames (``--samples`` samples, a seed of their own), written
    under ``run_dir/maps/`` and listed in ``log`` (``files.maps``, ``maps``)."""
    metric = make_metric(args, seed=seed + 2, announce=False)
    frames = frames.to(metric.device)
    with torch.no_grad():
        result = distance_map(metric, frames[1:], frames[:-1], args.samples)
    values = result.map[:, 0].float().cpu().numpy()
    log["files"]["maps"] = write_segment_maps(run_dir, values)
    log["maps"] = {"samples": result.samples, "max": float(values.max()), "color_limit": color_limit(values),
                   "means": [float(v) for v in values.mean(axis=(1, 2))]}


def _run(args: argparse.Namespace) -> int:
    compared = check_arguments(args)
    folder = RunFolder(args.out or default_run_dir("geodesic"), "geodesic", resume=args.resume,
                       argv=getattr(args, "argv", None))
    seed = folder.agree(lambda folder: (folder.check(), folder.seed(args.seed))[1])
    keys, sizing = load_sized_images(args.images, sizing_from(args),
                                     max(get_config(name).min_size for name in [args.metric, *compared]))
    export_settings = settings_from(args).resolved(*keys.shape[-2:])
    metrics = [make_metric(args, name, seed=seed, announce=is_main_process()) for name in [args.metric, *compared]]
    settings = folder.agree(lambda folder: folder.settings(record(args, metrics, seed)))
    with folder.claim(settings):
        return solve_and_export(args, folder.path, keys, sizing, metrics, compared, seed, export_settings)


def write_early_logs(run_dir: Path, main_log: dict, arrays: list[tuple[dict, np.ndarray]]) -> None:
    """Every path's ``log.json`` before its exports, listing the frames to come: if an export fails (a full
    disk), ``elpips export`` re-renders from the frames that were saved, and ``--resume`` finishes the run."""
    directories = [run_dir] + [run_dir / entry["dir"] for entry in main_log["compare"]]
    for directory, (log, frames) in zip(directories, arrays, strict=False):
        write_json(directory / LOG, {**log, "files": {"frames": [f"{FRAMES_DIR}/{name}"
                                                                 for name in frame_names(len(frames))]}})


def solve_and_export(args: argparse.Namespace, run_dir: Path, keys: torch.Tensor, sizing: dict,
                     metrics: list[Metric], compared: list[str], seed: int, settings: ExportSettings) -> int:
    """Solve the main path and every compared one in ``run_dir``, then write the exports and ``log.json``."""
    main_log, main_frames = solve_one(args, metrics[0], keys, run_dir, seed)
    main_log["sizing"] = sizing
    main_log["compare"] = [{"metric": name, "dir": f"compare/{name}"} for name in compared]
    runs = [(main_log, main_frames)]
    for entry, metric in zip(main_log["compare"], metrics[1:], strict=False):
        runs.append(solve_one(args, metric, keys, run_dir / entry["dir"], seed))
    if not is_main_process():
        return 0
    started = time.perf_counter()
    arrays = [(log, frames_to_uint8(frames)) for log, frames in runs]
    write_early_logs(run_dir, main_log, arrays)
    render_run(run_dir, main_log, arrays[0][1], settings, arrays[1:])
    if args.maps:
        add_segment_maps(args, main_frames, run_dir, main_log, seed)
        write_index(run_dir, main_log, has_comparison=bool(compared))
    main_log["timings"]["export_s"] = round(time.perf_counter() - started, 3)
    write_json(run_dir / LOG, main_log)
    for log, _ in runs:
        print(report(log, calibration_label(log["weights"]["metric"], log["weights"]["calibrated"])))
    files = main_log["files"]
    print(f"wrote {run_dir}/: frames/ ({len(files['frames'])} PNGs), "
          + ", ".join(name for key, name in files.items() if key not in ("frames", "maps"))
          + (f", maps/ ({len(files['maps']['segments'])} segment maps)" if "maps" in files else "")
          + ", index.html, log.json")
    return 0
