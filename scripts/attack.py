"""``elpips attack a1|a2``: adversarial attacks on one or several metrics, with a figure and ``results.json``.

Writes into ``--out`` (default ``outputs/attack-<kind>-<time>``): ``attacked-<metric>.png`` (8-bit; the attacks
round their results onto the 8-bit grid within the budget / constraint, so the files hold exactly what was
measured), ``figure.png`` (one row per metric: source, [anchor, target,] attacked, per-pixel L2 difference on a
shared scale) and ``results.json``. Every reported distance is
re-estimated after the attack with fresh ensemble samples from a separate generator.

``a1 --ablation`` attacks every rung of the ensemble ladder instead (:mod:`elpips.scripts.attack_ablation`).
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

import numpy as np
import torch
from elpips import LADDER, check_images, get_config
from elpips.experiments.robustness import (
    EIGHT_BIT,
    attack_a1,
    attack_a2,
    evaluate_a1,
    evaluate_a2,
    mean_pairwise_distance,
)
from elpips.io import ImageLoadError, load_image, load_images, save_image, write_json
from elpips.solver import phase

from .attack_ablation import check_options as check_ablation_options
from .attack_ablation import run_ablation
from .common import (
    add_metric_options,
    calibration_label,
    check_ensemble_options,
    cropped,
    default_run_dir,
    make_metric,
    metric_label,
    parse_crop,
    positive_float,
    positive_int,
    progress_bar,
    run_record,
    samples_text,
    weights_report,
)
from .run_folder import RunFolder

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def _add_common(parser: argparse.ArgumentParser, steps: int, step_size: float, step_help: str) -> None:
    add_metric_options(parser)
    parser.add_argument("--metrics", default=None, metavar="A,B,...",
                        help="attack several metrics in one run, e.g. elpips-vgg,lpips-vgg,lpips-squeeze "
                             "(overrides --metric)")
    parser.add_argument("--steps", type=positive_int, default=steps, help="attack steps")
    parser.add_argument("--samples-per-step", type=positive_int, default=8, metavar="M",
                        help="E-LPIPS samples averaged per gradient (expectation over transformations)")
    parser.add_argument("--step-size", type=positive_float, default=step_size,
                        help=f"{step_help}")
    parser.add_argument("--eval-max-samples", type=positive_int, default=2000, metavar="N",
                        help="cap on the fresh samples of the final evaluation (it stops earlier once the 95%% "
                             "half-width is below 0.01 and 2.5%% of the distance)")
    parser.add_argument("--crop", default=None, metavar="TOP,LEFT,HEIGHT,WIDTH",
                        help="attack this window of the images (quick runs on a small region)")
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder (default outputs/attack-...)")
    parser.add_argument("--json", action="store_true", help="print results.json on stdout")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "attack",
        description="Adversarial attacks on perceptual metrics (E-LPIPS paper, section 3).",
    )
    kinds = parser.add_subparsers(dest="attack", metavar="KIND")
    kinds.required = True
    a1 = kinds.add_parser(
        "a1", help="pull toward TARGET while d(x, SOURCE) <= d(ANCHOR, SOURCE)",
        description="A1: find x as close (L2) to TARGET as possible with d(x, SOURCE) <= d(ANCHOR, SOURCE). "
                    "Reports ||x - s|| / ||t - s|| (how far the attack pulled) and d(x, s) vs d(a, s).",
    )
    a1.add_argument("source", help="source image (PNG, JPEG, ...; or example:NAME)")
    a1.add_argument("target", help="target image (same size)")
    a1.add_argument("anchor", help="anchor image (same size): its distance to the source is the allowance")
    _add_common(a1, 200, 0.05, "initial move toward the target per step, as a fraction of ||t - s||")
    a1.add_argument("--check-samples", type=positive_int, default=64, metavar="N",
                    help="E-LPIPS samples of the attacker's estimate of d(anchor, source) and of its final "
                         "pull-back onto the constraint")
    a1.add_argument("--ablation", action="store_true",
                    help="attack every rung of the ensemble ladder with the same budget: " + " -> ".join(LADDER)
                         + " (each adds one piece; see --help of --metric); every result is evaluated under the "
                           "full elpips-vgg and under its own rung; writes figure.png, results.json, table.md")
    a1.add_argument("--resume", action="store_true",
                    help="--ablation: continue the run in --out with its recorded settings and seed, skipping "
                         "the rungs it finished")
    a1.set_defaults(handler=run, kind="a1")
    a2 = kinds.add_parser(
        "a2", help="maximise d(x, SOURCE) within an RMS budget EPSILON",
        description="A2: maximise d(x, SOURCE) subject to RMS(x - SOURCE) <= EPSILON and x in [0, 1]. With "
                    "--dataset, distances are also normalised by the mean distance between its images.",
    )
    a2.add_argument("source", help="source image (PNG, JPEG, ...; or example:NAME)")
    a2.add_argument("--epsilon", type=positive_float, required=True, metavar="E",
                    help="budget as an RMS pixel difference in [0, 1] units (||x - s||_2 <= E sqrt(3HW)); "
                         "e.g. 0.03")
    a2.add_argument("--dataset", default=None, metavar="DIR",
                    help="folder of images (at least 2, at least the source's size; centre-cropped to it): "
                         "1 = mean distance between two of them")
    a2.add_argument("--pairs", type=positive_int, default=45, help="at most this many image pairs of --dataset "
                                                                   "(random subset)")
    a2.add_argument("--dataset-samples", type=positive_int, default=16, metavar="N",
                    help="E-LPIPS samples per --dataset pair")
    _add_common(a2, 100, 0.25, "initial step length as a fraction of epsilon")
    a2.set_defaults(handler=run, kind="a2")


# -- inputs ----------------------------------------------------------------------------------------------------------
def metric_names(args: argparse.Namespace) -> list[str]:
    """``--metrics a,b,c`` (validated, no repeats) or ``[--metric]``."""
    if args.metrics is None:
        return [args.metric]
    names = [name.strip() for name in args.metrics.split(",") if name.strip()]
    if not names:
        raise ValueError("--metrics names no metric")
    for name in names:
        get_config(name)  # ValueError naming the valid metrics
    if len(set(names)) != len(names):
        raise ValueError(f"--metrics lists a metric twice: {args.metrics}")
    return names


def load_dataset(folder: str, height: int, width: int, min_size: int) -> tuple[torch.Tensor, list[str]]:
    """The images of ``folder`` (not recursive), centre-cropped to ``height x width``: ``[K, 3, H, W]``."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ImageLoadError(f"--dataset {path}: no such folder")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < 2:
        raise ValueError(f"--dataset {path}: needs at least 2 images, found {len(files)}")
    images = []
    for file in files:
        image = load_image(file, min_size)
        h, w = image.shape[-2:]
        if h < height or w < width:
            raise ImageLoadError(f"{file}: is {h}x{w}; --dataset images must be at least the source's size "
                                 f"{height}x{width}")
        top, left = (h - height) // 2, (w - width) // 2
        images.append(image[..., top:top + height, left:left + width])
    return torch.cat(images), [file.name for file in files]


def _generators(seed: int | None) -> tuple[int, torch.Generator, torch.Generator]:
    """The base seed, the attacker's generator and the (separate) evaluation generator."""
    base = seed if seed is not None else random.SystemRandom().randrange(2**62)
    return base, torch.Generator().manual_seed(base), torch.Generator().manual_seed(base + 1)


# -- outputs ---------------------------------------------------------------------------------------------------------
def difference_maps(source: torch.Tensor, attacked: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per-pixel L2 norm of ``x - s`` over channels, grey ``[3, H, W]``, on one shared scale (max -> white)."""
    norms = [(image - source)[0].norm(dim=0) for image in attacked]
    top = max(float(norm.max()) for norm in norms) or 1.0
    return [(norm / top).clamp(0, 1).expand(3, -1, -1) for norm in norms]


def figure(rows: list[list[torch.Tensor]], labels: list[str], headings: list[str] | None = None,
           pad: int = 4) -> np.ndarray:
    """Tile ``[3, H, W]`` images: column headings on top, one row per metric under a text label; images enlarged
    (pixel repetition) to at least 160 px wide (up to 16x), 14-px captions, white padding. ``[H', W', 3]`` uint8."""
    from .render.figures import GAP, column, labelled, row, tile

    width = rows[0][0].shape[-1]
    scale = max(1, min(16, -(-160 // width)))
    columns = max(len(images) for images in rows)
    headings = list(headings or [])[:columns]
    body = []
    for number, (images, label) in enumerate(zip(rows, labels, strict=True)):
        tiles = [tile(image.detach().float().clamp(0, 1).cpu(), scale) for image in images]
        if number == 0 and headings:
            tiles = [labelled(item, heading) for item, heading in zip(tiles, headings, strict=False)] + tiles[
                len(headings):]
        body.append(labelled(row(tiles, gap=pad), label))
    return column(body, gap=GAP)


def figure_headings(kind: str) -> list[str]:
    """The figure's column headings, in the order of :func:`attack_all`'s rows."""
    extra = ["anchor", "target"] if kind == "a1" else []
    return ["source", *extra, "attacked", "|attacked - source|"]


def _file_name(metric: str) -> str:
    return f"attacked-{metric}.png"


# -- run -------------------------------------------------------------------------------------------------------------
def _inputs(args: argparse.Namespace, min_size: int) -> torch.Tensor:
    """Source (, target, anchor) ``[K, 3, H, W]``, cropped to ``--crop``."""
    specs = [args.source, args.target, args.anchor] if args.kind == "a1" else [args.source]
    inputs = load_images(specs, min_size)
    inputs = cropped(inputs, parse_crop(args.crop, *inputs.shape[-2:]))
    check_images(inputs, "the cropped images" if args.crop else "the images", min_size)
    return inputs


def run(args: argparse.Namespace) -> int:
    ablation = args.kind == "a1" and args.ablation
    if ablation:
        check_ablation_options(args)
    elif getattr(args, "resume", False):
        raise ValueError("--resume continues an --ablation run")
    if ablation and args.resume and args.out is None:
        raise ValueError("--resume needs --out DIR (the run to continue)")
    names = list(LADDER) if ablation else metric_names(args)
    check_ensemble_options(args, names)
    min_size = max(get_config(name).min_size for name in names)
    inputs = _inputs(args, min_size)
    if ablation:
        return run_ablation(args, inputs)
    height, width = inputs.shape[-2:]
    dataset, dataset_files = (None, None)
    if args.kind == "a2" and args.dataset is not None:
        dataset, dataset_files = load_dataset(args.dataset, height, width, min_size)
    folder = RunFolder(args.out or default_run_dir(f"attack-{args.kind}"), "attack", kind=args.kind,
                       resumable=False, argv=getattr(args, "argv", None))
    folder.check()
    base_seed = folder.seed(args.seed)
    metrics = [make_metric(args, name, seed=base_seed) for name in names]
    with folder.claim(folder.settings(record(args, metrics, base_seed))):
        return attack_all(args, folder.path, metrics, inputs, dataset, dataset_files, base_seed)


def record(args: argparse.Namespace, metrics: list, seed: int) -> dict:
    """The run's record: what determines the result."""
    images = [args.source, args.target, args.anchor] if args.kind == "a1" else [args.source]
    options = {name: getattr(args, name, None) for name in (
        "steps", "samples_per_step", "step_size", "eval_max_samples", "crop", "check_samples", "epsilon", "dataset",
        "pairs", "dataset_samples")}
    return run_record(args, metrics, seed, images=images, **options)


def attack_one(args: argparse.Namespace, metric, inputs: torch.Tensor, dataset: torch.Tensor | None,
               base_seed: int) -> tuple[torch.Tensor, dict]:
    """Attack ``metric``: the attacked image ``[1, 3, H, W]`` (8-bit grid) and its results entry."""
    name = metric.name
    _, attack_generator, eval_generator = _generators(base_seed)
    images = inputs.to(metric.device)
    source = images[:1]
    with progress_bar(f"{args.kind} {name}", args.steps, unit="step") as bar:

        def progress(step: int, value: torch.Tensor) -> None:
            bar.update(1)
            bar.set_postfix(d=f"{float(value[0]):.4f}")

        if args.kind == "a1":
            result = attack_a1(metric, source, images[1:2], images[2:3], steps=args.steps,
                               samples_per_step=args.samples_per_step, step_size=args.step_size,
                               threshold_samples=args.check_samples, check_samples=args.check_samples,
                               generator=attack_generator, progress=progress, levels=EIGHT_BIT)
        else:
            result = attack_a2(metric, source, args.epsilon, steps=args.steps,
                               samples_per_step=args.samples_per_step, step_size=args.step_size,
                               generator=attack_generator, progress=progress, levels=EIGHT_BIT)
    attacked = result.images  # on the 8-bit grid: exactly what the saved file holds
    with phase(f"{args.kind} {name}: fresh-sample evaluation (up to {samples_text(args.eval_max_samples)})"):
        report = evaluate_attack(args, metric, images, attacked, result, dataset, eval_generator)
    entry = {**weights_report(metric), "label": metric_label(metric), "attacked_image": _file_name(name), **report,
             "attacker_final_estimate": float(result.trace[-1, 0])}
    return attacked, entry


def evaluate_attack(args: argparse.Namespace, metric, images: torch.Tensor, attacked: torch.Tensor, result,
                    dataset: torch.Tensor | None, eval_generator: torch.Generator) -> dict:
    """The attack's report on fresh samples (A2 with ``--dataset``: also normalised by the dataset's spread)."""
    source = images[:1]
    if args.kind == "a1":
        report = evaluate_a1(metric, source, images[1:2], images[2:3], attacked, eval_generator,
                             max_samples=args.eval_max_samples).row()
        report["attacker_threshold"] = float(result.threshold[0])
    else:
        report = evaluate_a2(metric, source, attacked, result.start, eval_generator,
                             max_samples=args.eval_max_samples).row()
        if dataset is not None:
            distances, _ = mean_pairwise_distance(metric, dataset.to(metric.device), args.dataset_samples,
                                                  args.pairs, eval_generator)
            normalizer = float(distances.mean())
            report.update(normalizer=normalizer, normalizer_pairs=len(distances),
                          normalized_distance=report["distance"] / normalizer,
                          normalized_start_distance=report["start_distance"] / normalizer)
    return report


def attack_all(args: argparse.Namespace, out: Path, metrics: list, inputs: torch.Tensor,
               dataset: torch.Tensor | None, dataset_files: list[str] | None, base_seed: int) -> int:
    """Attack every metric, evaluate on fresh samples, write the attacked images, the figure and results.json."""
    names = [metric.name for metric in metrics]
    height, width = inputs.shape[-2:]
    entries, attacked_images = [], []
    for metric in metrics:
        attacked, entry = attack_one(args, metric, inputs, dataset, base_seed)
        save_image(out / _file_name(metric.name), attacked)
        attacked_images.append(attacked.cpu())
        entries.append(entry)

    source = inputs[:1]
    differences = difference_maps(source, attacked_images)
    rows, labels = [], []
    for entry, image, difference in zip(entries, attacked_images, differences, strict=False):
        extra = [inputs[2], inputs[1]] if args.kind == "a1" else []
        rows.append([inputs[0], *extra, image[0], difference])
        labels.append(_row_label(args.kind, entry))
    save_image(out / "figure.png", figure(rows, labels, figure_headings(args.kind)))
    results = _results(args, names, base_seed, height, width, dataset_files, entries)
    write_json(out / "results.json", results)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _print_table(args, results, out)
    return 0


def _row_label(kind: str, entry: dict) -> str:
    name = calibration_label(entry["metric"], entry["calibrated"], short=True)
    if kind == "a1":
        return f"{name}: pulled {entry['relative_pull']:.3f}, d {entry['distance']:.4f}"
    normalized = f" ({entry['normalized_distance']:.3f} x mean)" if "normalized_distance" in entry else ""
    return f"{name}: d {entry['distance']:.4f}{normalized}"


def _results(args, names, seed, height, width, dataset_files, entries) -> dict:
    columns = ["source", "anchor", "target", "attacked", "l2 difference"] if args.kind == "a1" else \
        ["source", "attacked", "l2 difference"]
    results = {
        "attack": args.kind,
        "source": args.source,
        "crop": args.crop,
        "size": [int(height), int(width)],
        "settings": {"steps": args.steps, "samples_per_step": args.samples_per_step, "step_size": args.step_size,
                     "eval_max_samples": args.eval_max_samples, "seed": seed,
                     **({"check_samples": args.check_samples} if args.kind == "a1" else {})},
        "figure": "figure.png",
        "figure_rows": names,
        "figure_columns": columns,
        "results": entries,
    }
    if args.kind == "a1":
        results.update(target=args.target, anchor=args.anchor)
    else:
        pixels = 3 * int(height) * int(width)
        results.update(epsilon_rms=args.epsilon, epsilon_l2=args.epsilon * math.sqrt(pixels),
                       dataset=args.dataset, dataset_images=dataset_files,
                       dataset_samples=args.dataset_samples if args.dataset else None)
    return results


def _print_table(args, results: dict, out: Path) -> None:
    if args.kind == "a1":
        print(f"A1 {args.source} -> {args.target} (anchor {args.anchor}); fresh-sample estimates:")
        for e in results["results"]:
            print(f"  {e['label']}: pulled {e['relative_pull']:.3f} of ||t - s||, "
                  f"d(x,s) {e['distance']:.4f} ± {e['half_width']:.4f} vs d(a,s) {e['anchor_distance']:.4f} "
                  f"(paired margin {e['margin']:+.4f} ± {e['margin_half_width']:.4f}, {samples_text(e['samples'])})")
    else:
        print(f"A2 {args.source}, epsilon {args.epsilon} RMS (L2 {results['epsilon_l2']:.3f}); "
              f"fresh-sample estimates:")
        for e in results["results"]:
            normalized = (f", normalized {e['normalized_start_distance']:.3f} -> {e['normalized_distance']:.3f}"
                          if "normalized_distance" in e else "")
            print(f"  {e['label']}: random start {e['start_distance']:.4f} -> attacked {e['distance']:.4f} "
                  f"± {e['half_width']:.4f}{normalized} (RMS change {e['rms_change']:.4f}, "
                  f"{samples_text(e['samples'])})")
    print(f"wrote {out}/results.json, {out}/figure.png and {len(results['results'])} attacked image(s)")
