"""``elpips barycenter IMG...``: the perceptual barycenter (or median) of several images, resumable.

Also the paper's two demonstrations from one image: ``--perturb noise`` (10 copies with Gaussian noise,
sigma 0.07) and ``--perturb shift`` (10 copies shifted by up to 2 px). Outputs go to ``--out`` (default
``outputs/barycenter-<time>/``): ``inputs/``, ``l2_mean.png``, ``barycenter.png``, ``snapshots/``,
``contact_sheet.png``, ``log.json`` and ``checkpoint.pt`` (every file written atomically).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
from elpips.barycenters import (
    REFERENCE_STEPS,
    BarycenterStepInfo,
    evaluate_objective,
    noisy_copies,
    shifted_copies,
    solve,
)
from elpips.barycenters.options import check_power, check_refs_per_step, normalized_weights
from elpips.io import load_image, save_image, write_json
from elpips.sizing import conform_images, load_sized_images, resample
from elpips.solver import CHECKPOINT_NAME, phase
from elpips.textures import seam_statistic, tiled
from elpips.validation import check_images

from .common import (
    add_averaging_option,
    add_metric_options,
    add_sizing_options,
    calibration_label,
    cropped,
    default_run_dir,
    make_metric,
    metric_label,
    nonnegative_int,
    parse_crop,
    positive_int,
    run_record,
    samples_text,
    sizing_from,
    weights_report,
)
from .render.figures import contact_sheet
from .run_folder import RunFolder


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "barycenter",
        description="Minimise sum_i w_i d(x, x_i)^p over images x by gradient descent (Adam, the reference's "
                    "schedule). p=2: barycenter; p=1: median. With --perturb, the inputs are copies of one "
                    "image with noise or small shifts (the paper's demonstrations).",
    )
    parser.add_argument("images", nargs="+", metavar="IMG", help="input images of equal size (or example:NAME)")
    parser.add_argument("--weights", default=None, metavar="W1,W2,...",
                        help="non-negative weight per input (normalised to sum 1; default equal)")
    add_metric_options(parser)
    parser.add_argument("--power", type=float, default=2.0, help="p: 2 barycenter, 1 median")
    parser.add_argument("--steps", type=nonnegative_int, default=REFERENCE_STEPS,
                        help="Adam steps (the reference's; hours on a CPU)")
    parser.add_argument("--init", default="noise", metavar="noise|mean|PATH",
                        help="start from noise 0.5+0.2N(0,1) (reference), the weighted L2 mean, or an image")
    parser.add_argument("--refs-per-step", default="all", metavar="all|K",
                        help="inputs compared per step under one shared ensemble sample (all or a number; 1 is the "
                             "reference's choice)")
    parser.add_argument("--samples-per-step", type=positive_int, default=1, help="ensemble samples per step")
    add_averaging_option(parser)
    parser.add_argument("--checkpoint-every", type=positive_int, default=1000,
                        help="steps between checkpoints and seeded objective estimates")
    parser.add_argument("--eval-samples", type=positive_int, default=32,
                        help="ensemble samples of each seeded objective estimate")
    parser.add_argument("--crop", default=None, metavar="TOP,LEFT,HEIGHT,WIDTH",
                        help="use this window of every input (quick runs on a small region)")
    parser.add_argument("--perturb", choices=("noise", "shift"), default=None,
                        help="make the inputs from ONE image: noisy or shifted copies (paper demonstrations)")
    parser.add_argument("--count", type=positive_int, default=10, help="--perturb: number of copies")
    parser.add_argument("--noise-scale", type=float, default=0.07, help="--perturb noise: sigma")
    parser.add_argument("--max-shift", type=int, default=2, help="--perturb shift: largest shift in px")
    run_options = parser.add_argument_group("run folder")
    run_options.add_argument("--out", default=None, metavar="DIR",
                             help="output folder (default: outputs/barycenter-<time>)")
    run_options.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    add_sizing_options(parser)
    parser.set_defaults(handler=run)


def parse_weights(text: str | None, count: int) -> list[float] | None:
    """``"1,2,3"`` -> ``[1.0, 2.0, 3.0]`` (``count`` of them, checked by the solver)."""
    if text is None:
        return None
    try:
        weights = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--weights must be comma-separated numbers, got {text!r}") from None
    if len(weights) != count:
        raise ValueError(f"--weights gives {len(weights)} weights for {count} input images")
    return weights


def snapshot_steps(steps: int) -> set[int]:
    """Log-spaced steps 1, 2, 5, 10, 20, 50, ... up to ``steps``, plus ``steps``."""
    marks, decade = set(), 1
    while decade <= steps:
        marks.update(m * decade for m in (1, 2, 5) if m * decade <= steps)
        decade *= 10
    return marks | ({steps} if steps else set())


def record(args: argparse.Namespace, metric, seed: int) -> dict[str, Any]:
    """The run's record: what determines the result (a resume must repeat it). ``steps`` may grow on resume: a
    run continues to the new count."""
    return run_record(args, [metric], seed, **{name: getattr(args, name) for name in (
        "images", "weights", "power", "init", "refs_per_step", "samples_per_step", "crop", "perturb", "count",
        "noise_scale", "max_shift", "eval_samples", "average_last", "steps")})


def make_inputs(args: argparse.Namespace, seed: int) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    """``(inputs [N,3,H,W], original [1,3,H,W] or None, description)`` from the files or ``--perturb``."""
    if args.perturb is None:
        if len(args.images) < 2:
            raise ValueError("a barycenter needs at least 2 images (or one image with --perturb noise|shift)")
        images, sizing = load_sized_images(args.images, sizing_from(args))
        return (cropped(images, parse_crop(args.crop, *images.shape[-2:])), None,
                {"images": args.images, "sizing": sizing})
    if len(args.images) != 1:
        raise ValueError(f"--perturb makes the inputs from one image, got {len(args.images)}")
    image, sizing = conform_images([load_image(args.images[0])], args.images, sizing_from(args))
    image = cropped(image, parse_crop(args.crop, *image.shape[-2:]))
    generator = torch.Generator().manual_seed(seed + 1_000_003)  # a stream apart from the solver's
    if args.perturb == "noise":
        copies = noisy_copies(image, args.count, args.noise_scale, generator)
        details: dict[str, Any] = {"noise_scale": args.noise_scale}
    else:
        copies, shifts = shifted_copies(image, args.count, args.max_shift, generator)
        details = {"max_shift": args.max_shift, "shifts_dy_dx": shifts.tolist()}
    return copies, image, {"images": args.images, "perturb": args.perturb, "count": args.count, "sizing": sizing,
                           **details}


def init_option(args: argparse.Namespace, inputs: torch.Tensor) -> str | torch.Tensor:
    """``noise``/``mean``, or the ``--init`` image (with ``--resize``/``--fit``: resampled to the inputs' size)."""
    if args.init in ("noise", "mean"):
        return args.init
    image = load_image(args.init)
    sizing = sizing_from(args)
    if sizing.active:
        return resample(image, *inputs.shape[-2:], center_crop=sizing.center_crop)
    return cropped(image, parse_crop(args.crop, *image.shape[-2:]))


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.resume and args.out is None:
        raise ValueError("--resume needs --out DIR (the folder of the run to continue)")
    sizing_from(args)  # a bad --resize fails before anything is read
    folder = RunFolder(args.out or default_run_dir("barycenter"), "barycenter", resume=args.resume,
                       argv=getattr(args, "argv", None), may_change=("steps",))
    folder.check()
    seed = folder.seed(args.seed)
    inputs, original, source = make_inputs(args, seed)
    weights = parse_weights(args.weights, inputs.shape[0])
    normalized = normalized_weights(weights, inputs.shape[0]).float()
    check_power(args.power)
    check_refs_per_step(args.refs_per_step, inputs.shape[0])
    init = init_option(args, inputs)
    if isinstance(init, torch.Tensor) and init.shape[-2:] != inputs.shape[-2:]:
        raise ValueError(f"init image {args.init} is {init.shape[-2]}x{init.shape[-1]}, the inputs are "
                         f"{inputs.shape[-2]}x{inputs.shape[-1]} (height x width)")
    metric = make_metric(args, seed=seed)
    check_images(inputs, "input images", metric.min_size)
    with folder.claim(folder.settings(record(args, metric, seed))):
        out, checkpoint = folder.path, folder.path / CHECKPOINT_NAME
        for index, image in enumerate(inputs):
            save_image(out / "inputs" / f"input_{index + 1:02d}.png", image)
        if original is not None:
            save_image(out / "original.png", original)
        l2_mean = torch.einsum("n,nchw->chw", normalized, inputs).unsqueeze(0).clamp(0, 1)
        save_image(out / "l2_mean.png", l2_mean)
        marks = snapshot_steps(args.steps)

        def on_step(info: BarycenterStepInfo) -> None:
            if info.step in marks:
                save_image(out / "snapshots" / f"step_{info.step:06d}.png", info.image)

        result = solve(inputs, metric, weights=weights, power=args.power, steps=args.steps, init=init,
                       generator=seed, checkpoint=checkpoint, checkpoint_every=args.checkpoint_every,
                       resume=args.resume and checkpoint.is_file(), callback=on_step, progress=True,
                       samples_per_step=args.samples_per_step, eval_samples=args.eval_samples,
                       refs_per_step=args.refs_per_step, average_last=args.average_last)
        write_results(args, out, metric, inputs, l2_mean, original, result)
        log = write_log(args, out, metric, source, seed, result, l2_mean, inputs, original is not None, started)
    if result.note is not None:
        print(f"note: {result.note}", file=sys.stderr)
    objective = log["objective"]
    print(f"{metric_label(metric)} barycenter of {inputs.shape[0]} images, p={args.power:g}, "
          f"{result.state['step']} steps: objective {objective['start']:.4g} -> {objective['end']:.4g} "
          f"(L2 mean: {objective['l2_mean']:.4g})")
    print(f"wrote {out}/barycenter.png, tiled.png (seam statistic {log['seam_statistic']['barycenter']:.3g}), "
          "contact_sheet.png, log.json")
    return 0


def write_results(args: argparse.Namespace, out: Path, metric: Any, inputs: torch.Tensor, l2_mean: torch.Tensor,
                  original: torch.Tensor | None, result: Any) -> None:
    """``barycenter.png``, ``tiled.png`` (the barycenter repeated 2x2: whether it tiles without a seam; written for
    every run, tileable or not, as the geodesic viewer's preview is) and ``contact_sheet.png`` (inputs | L2 mean |
    result, captioned with the metric)."""
    save_image(out / "barycenter.png", result.image)
    save_image(out / "tiled.png", tiled(result.image.reshape(1, *result.image.shape[-3:]))[0])
    label = calibration_label(metric.name + ("" if args.power == 2 else f" p={args.power:g}"), metric.calibrated,
                              short=True)
    save_image(out / "contact_sheet.png", contact_sheet(inputs, l2_mean, result.image, label, original))


def write_log(args: argparse.Namespace, out: Path, metric: Any, source: dict[str, Any], seed: int, result: Any,
              l2_mean: torch.Tensor, inputs: torch.Tensor, has_original: bool, started: float) -> dict[str, Any]:
    """``log.json``: settings, seed, weights, the objective at start and end and of the L2 mean, history."""
    with phase(f"barycenter: objective of the L2 mean ({samples_text(args.eval_samples)})"):
        mean_evaluation = evaluate_objective(metric, l2_mean.to(metric.device), inputs.to(metric.device),
                                             torch.tensor(result.settings["weights"], device=metric.device),
                                             args.power, args.eval_samples, result.settings["eval_seed"])
    start, last = result.evaluations[0], result.evaluations[-1]
    end = next((entry for entry in reversed(result.evaluations) if entry.step == result.returned_step), last)
    log = {
        "command": "barycenter",
        "inputs": source,
        "seed": seed,
        "settings": result.settings,
        **weights_report(metric),
        "objective": {"start": start.objective, "end": end.objective,
                      "last_iterate": last.objective, "l2_mean": mean_evaluation.objective,
                      "eval_samples": end.samples},
        "seam_statistic": {"barycenter": float(seam_statistic(result.image.reshape(1, *result.image.shape[-3:]))[0]),
                           "inputs": seam_statistic(inputs).tolist()},
        "history": result.history,
        "evaluations": [entry.as_dict() for entry in result.evaluations],
        "resumed_from_step": result.resumed_from,
        "returned_step": result.returned_step,
        "note": result.note,
        "timings": {**result.timings, "wall_seconds_this_call": time.perf_counter() - started},
        "outputs": ["inputs/", "l2_mean.png", "barycenter.png", "tiled.png", "snapshots/", "contact_sheet.png",
                    "log.json", CHECKPOINT_NAME, "run.json"] + (["original.png"] if has_original else []),
    }
    write_json(out / "log.json", log)
    return log
